//! Giving freed memory back to the operating system after a config (re)load.
//!
//! Off the request path: called on the thread that loaded a config or dropped a runtime.
//! Parsing a config peaks at several times what its runtime keeps (the source tree, the JSON
//! tree, the file structs, all freed once the runtime is built), and a replaced runtime is
//! freed whole after a reload. glibc's malloc keeps most of such freed memory in its arenas
//! (only the top of each heap is returned on its own), so without a trim the process keeps
//! the peak of every load as resident memory. `malloc_trim(0)` returns every whole free page
//! of every arena. Other allocators and platforms: nothing to do.

/// Return the allocator's free pages to the operating system (glibc on Linux; elsewhere a
/// no-op); whether any were. Costs a walk over the free lists: milliseconds after a load of
/// thousands of routes. Also used once connections have parked (`server/idle_trim.rs`).
pub(crate) fn trim_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap bookkeeping under its arena locks; it
    // takes a plain integer and touches no memory of ours.
    unsafe {
        libc::malloc_trim(0) != 0
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// A runtime's last field: when the runtime is dropped (on the background thread, once the
/// last request that started on it has finished), every field before it has been freed by
/// the time this one drops, and the trim gives their pages back.
pub(crate) struct TrimOnDrop;

impl Drop for TrimOnDrop {
    fn drop(&mut self) {
        let _ = trim_allocator();
    }
}
