//! gRPC's length-prefixed messages (gRPC over HTTP/2, "Length-Prefixed-Message"): a flag byte
//! (compressed or not), a 4-byte big-endian length, the message.
//!
//! On the request path of transcoding routes: the transcoder frames the request message it
//! built, and reads the upstream's messages back out of the response body frame by frame,
//! however HTTP/2 splits them, never holding more than one message plus one chunk.

use bytes::{Buf, Bytes, BytesMut};

/// The flag byte of an uncompressed message.
const UNCOMPRESSED: u8 = 0;
/// The flag of a gRPC-Web trailer frame (the trailers as an HTTP/1 header block).
pub(crate) const TRAILER_FLAG: u8 = 0x80;

/// Why a stream of frames cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("a message of {size} bytes is larger than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("a message is compressed, but no compression was offered")]
    Compressed,
    #[error("the stream ended inside a message")]
    Truncated,
}

/// One message with its prefix.
pub(crate) fn frame(message: &[u8]) -> Bytes {
    frame_with_flag(UNCOMPRESSED, message)
}

pub(crate) fn frame_with_flag(flag: u8, message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[flag]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

/// Cuts a byte stream into messages.
#[derive(Debug)]
pub(crate) struct Deframer {
    buffer: BytesMut,
    limit: usize,
}

/// A frame as read: its flag and its payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) flag: u8,
    pub(crate) payload: Bytes,
}

impl Deframer {
    /// Messages over `limit` bytes are refused as soon as their prefix is read.
    pub(crate) fn new(limit: usize) -> Deframer {
        Deframer {
            buffer: BytesMut::new(),
            limit,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next whole frame, if one has arrived. Only uncompressed messages and (with
    /// `trailers`) gRPC-Web trailer frames are accepted.
    pub(crate) fn next_frame(&mut self, trailers: bool) -> Result<Option<Frame>, FrameError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        let flag = self.buffer[0];
        let size = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if flag & 1 != 0 {
            return Err(FrameError::Compressed);
        }
        if flag != UNCOMPRESSED && !(trailers && flag == TRAILER_FLAG) {
            return Err(FrameError::Compressed);
        }
        if size > self.limit {
            return Err(FrameError::TooLarge {
                size,
                limit: self.limit,
            });
        }
        if self.buffer.len() < 5 + size {
            self.buffer.reserve(5 + size - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(5);
        Ok(Some(Frame {
            flag,
            payload: self.buffer.split_to(size).freeze(),
        }))
    }

    /// The next whole message.
    pub(crate) fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        Ok(self.next_frame(false)?.map(|frame| frame.payload))
    }

    /// At the end of the stream: nothing may be left over.
    pub(crate) fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_split() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&frame(b"hello"));
        wire.extend_from_slice(&frame(b""));
        wire.extend_from_slice(&frame(&[7u8; 300]));
        let mut deframer = Deframer::new(1024);
        let mut out = Vec::new();
        for byte in wire {
            deframer.push(&[byte]);
            while let Some(message) = deframer.next_message().expect("valid") {
                out.push(message);
            }
        }
        deframer.finish().expect("nothing left");
        assert_eq!(out.len(), 3);
        assert_eq!(&out[0][..], b"hello");
        assert!(out[1].is_empty());
        assert_eq!(out[2].len(), 300);
    }

    #[test]
    fn oversized_compressed_and_truncated_frames_are_refused() {
        let mut deframer = Deframer::new(4);
        deframer.push(&frame(b"hello"));
        assert_eq!(
            deframer.next_message(),
            Err(FrameError::TooLarge { size: 5, limit: 4 })
        );
        let mut deframer = Deframer::new(100);
        deframer.push(&[1, 0, 0, 0, 1, 9]);
        assert_eq!(deframer.next_message(), Err(FrameError::Compressed));
        let mut deframer = Deframer::new(100);
        deframer.push(&[0, 0, 0, 0, 3, 9]);
        assert_eq!(deframer.next_message(), Ok(None));
        assert_eq!(deframer.finish(), Err(FrameError::Truncated));
    }
}
