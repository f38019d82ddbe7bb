"""A gRPC peer the gateway's tests did not write: Python's grpcio, with code generated at test
time by protoc (grpcio-tools) from the tests' .proto files and the official google/api and
google/rpc definitions (googleapis-common-protos). Nothing here comes from the gateway's Rust
code, so a misunderstanding shared by the gateway and the tests' Rust server cannot hide.

    grpc_peer.py server PROTOS OUT          serve the library and greeter services on
                                            127.0.0.1, print "PORT <n>", run until stdin closes
    grpc_peer.py server PROTOS OUT CERT KEY the same over TLS (ALPN h2) with that certificate
    grpc_peer.py client PROTOS OUT TARGET [ROOT_CA]
                                            call through TARGET (the gateway) as a native gRPC
                                            client and print one line per check
    grpc_peer.py web PROTOS OUT URL         call through URL (the gateway) as a gRPC-Web client
                                            (sonora's, not ours) and print one line per check

`.ci/run` installs grpcio, grpcio-tools, grpcio-status and sonora.
"""

import base64
import os
import sys
import threading
from concurrent import futures

try:
    import grpc
    from grpc_tools import protoc
    import google.api.annotations_pb2
except ImportError as missing:
    print(f"MISSING {missing}: python3 -m pip install grpcio grpcio-tools grpcio-status (.ci/run does)")
    sys.exit(3)


def generate(protos, out):
    """Compile the tests' protos for Python with protoc."""
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    googleapis = os.path.dirname(os.path.dirname(os.path.dirname(google.api.annotations_pb2.__file__)))
    os.makedirs(out, exist_ok=True)
    args = [
        "protoc",
        f"-I{protos}",
        f"-I{well_known}",
        f"-I{googleapis}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "library/v1/library.proto",
        "greeter.proto",
    ]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        sys.exit(4)
    sys.path.insert(0, out)


def status_code(number):
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def serve(protos, out, cert=None, key=None):
    generate(protos, out)
    from library.v1 import library_pb2 as pb
    from library.v1 import library_pb2_grpc as pbg
    import greeter_pb2
    import greeter_pb2_grpc
    from google.api import httpbody_pb2
    from google.protobuf import any_pb2, empty_pb2
    from google.rpc import error_details_pb2, status_pb2

    def served(context, name):
        context.send_initial_metadata((("x-served-by", name),))

    class Library(pbg.LibraryServicer):
        def GetBook(self, request, context):
            served(context, "GetBook")
            return request

        def GetBookTitle(self, request, context):
            served(context, "GetBookTitle")
            return request

        def GetSpecialBook(self, request, context):
            served(context, "GetSpecialBook")
            return request

        def DeleteBook(self, request, context):
            served(context, "DeleteBook")
            return empty_pb2.Empty()

        def PublishBook(self, request, context):
            served(context, "PublishBook")
            return request

        def CreateBook(self, request, context):
            served(context, "CreateBook")
            return request

        def UpdateBook(self, request, context):
            served(context, "UpdateBook")
            return request

        def Echo(self, request, context):
            served(context, "Echo")
            return request

        def GetFile(self, request, context):
            served(context, "GetFile")
            return httpbody_pb2.HttpBody(content_type="text/plain", data=("file:" + request.path).encode())

        def Upload(self, request, context):
            served(context, "Upload")
            return request

        def Fail(self, request, context):
            if request.after_headers:
                served(context, "Fail")
            trailing = [("x-trailer", "failed")]
            if request.unknown_detail:
                detail = any_pb2.Any(type_url="type.example.com/unknown.Detail", value=b"\x08\x01")
                status = status_pb2.Status(code=request.code, message=request.message, details=[detail])
                trailing.append(("grpc-status-details-bin", status.SerializeToString()))
            if request.with_details:
                detail = any_pb2.Any()
                detail.Pack(
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(field="name", description="must not be empty")
                        ]
                    )
                )
                status = status_pb2.Status(code=request.code, message=request.message, details=[detail])
                trailing.append(("grpc-status-details-bin", status.SerializeToString()))
            context.set_trailing_metadata(trailing)
            context.abort(status_code(request.code), request.message)

        def Purge(self, request, context):
            served(context, "Purge")
            return request

        def ListBooks(self, request, context):
            served(context, "ListBooks")
            for index in range(request.page_size):
                yield pb.Book(name=f"shelves/{request.shelf}/books/{index}", title=f"Book {index}")
            if request.page_token == "fail":
                context.abort(grpc.StatusCode.NOT_FOUND, "the shelf ran out")

        def AddBooks(self, request_iterator, context):
            books = list(request_iterator)
            return pb.ListBooksResponse(books=books, next_page_token=str(len(books)))

        def Metadata(self, request, context):
            served(context, "Metadata")
            context.set_trailing_metadata((("x-trailer", "done"),))
            reply = pb.Everything()
            for key, value in context.invocation_metadata():
                if key.endswith("-bin"):
                    reply.extra[key] = base64.b64encode(value).decode()
                elif key.startswith("x-") or key in ("authorization", "user-agent-seen"):
                    reply.extra[key] = value
            timeout = context.time_remaining()
            reply.ratio = timeout if timeout is not None else -1
            return reply

        def Unannotated(self, request, context):
            served(context, "Unannotated")
            return request

        def Chat(self, request_iterator, context):
            served(context, "Chat")
            for book in request_iterator:
                yield pb.Book(name=book.title + "!", title=book.title)

    class Greeter(greeter_pb2_grpc.GreeterServicer):
        def SayHello(self, request, context):
            return greeter_pb2.HelloReply(message="Hello, " + request.name)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pbg.add_LibraryServicer_to_server(Library(), server)
    greeter_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
    if cert:
        with open(cert, "rb") as c, open(key, "rb") as k:
            credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    # The test process holds our stdin: when it ends, so do we.
    sys.stdin.read()
    server.stop(0)


def client(protos, out, target, root_ca=None):
    generate(protos, out)
    from library.v1 import library_pb2 as pb
    from library.v1 import library_pb2_grpc as pbg
    import greeter_pb2
    import greeter_pb2_grpc

    if root_ca:
        with open(root_ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(target, credentials, options=(("grpc.ssl_target_name_override", "localhost"),))
    else:
        channel = grpc.insecure_channel(target)
    library = pbg.LibraryStub(channel)

    # Unary with headers and trailers.
    reply, call = library.Echo.with_call(pb.Everything(text="native", big=1 << 60), timeout=20)
    initial = dict(call.initial_metadata())
    print(f"UNARY text={reply.text} big={reply.big} served_by={initial.get('x-served-by')}")

    # A failure with status details and trailing metadata, sent after headers.
    try:
        library.Fail(pb.FailRequest(code=5, message="no such book ✓", with_details=True, after_headers=True), timeout=20)
        print("FAIL no error")
    except grpc.RpcError as error:
        trailing = dict(error.trailing_metadata() or ())
        has_details = "grpc-status-details-bin" in trailing
        print(f"FAIL {error.code().name} | {error.details()} | trailer={trailing.get('x-trailer')} details={has_details}")

    # Server streaming, then its error after the messages.
    books = []
    try:
        for book in library.ListBooks(pb.ListBooksRequest(shelf="s1", page_size=3, page_token="fail"), timeout=20):
            books.append(book.name)
        print("STREAM no error")
    except grpc.RpcError as error:
        print(f"STREAM {len(books)} {books[-1] if books else ''} {error.code().name}")

    # Client streaming.
    reply = library.AddBooks(iter([pb.Book(title="a"), pb.Book(title="b")]), timeout=20)
    print(f"CLIENT_STREAM {reply.next_page_token} {[b.title for b in reply.books]}")

    # Bidirectional: the second book is sent only once the answer to the first has come
    # back, so a gateway that waited for the whole request stream would hang here.
    import queue

    outgoing = queue.Queue()

    def books():
        while True:
            book = outgoing.get()
            if book is None:
                return
            yield book

    answers = library.Chat(books(), timeout=20)
    outgoing.put(pb.Book(title="one"))
    first = next(answers)
    outgoing.put(pb.Book(title="two"))
    second = next(answers)
    outgoing.put(None)
    rest = list(answers)
    print(f"BIDI {first.name} {second.name} {len(rest)} {answers.code().name}")

    greeter = greeter_pb2_grpc.GreeterStub(channel)
    print("GREETER " + greeter.SayHello(greeter_pb2.HelloRequest(name="native"), timeout=20).message)

    # A route may refuse the call (the gateway's own answer, as a gRPC status).
    try:
        library.GetBook(pb.Book(name="shelves/1/books/1"), timeout=20)
        print("GETBOOK OK")
    except grpc.RpcError as error:
        print(f"GETBOOK {error.code().name}")


def web(protos, out, url):
    generate(protos, out)
    from library.v1 import library_pb2 as pb
    import sonora.client

    channel = sonora.client.insecure_web_channel(url)

    def method(name, request_type, response_type, stream=False):
        make = channel.unary_stream if stream else channel.unary_unary
        return make(
            f"/library.v1.Library/{name}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )

    echo = method("Echo", pb.Everything, pb.Everything)
    reply, call = echo.with_call(pb.Everything(text="web", big=1 << 60), timeout=20)
    initial = {key.lower(): value for key, value in call.initial_metadata()}
    print(f"WEB_UNARY text={reply.text} big={reply.big} served_by={initial.get('x-served-by')}")

    try:
        method("Fail", pb.FailRequest, pb.Everything)(pb.FailRequest(code=5, message="no such book"), timeout=20)
        print("WEB_FAIL no error")
    except grpc.RpcError as error:
        print(f"WEB_FAIL {error.code().name} | {error.details()}")

    books = []
    try:
        stream = method("ListBooks", pb.ListBooksRequest, pb.Book, stream=True)
        for book in stream(pb.ListBooksRequest(shelf="s1", page_size=3, page_token="fail"), timeout=20):
            books.append(book.name)
        print(f"WEB_STREAM {len(books)} no error")
    except grpc.RpcError as error:
        print(f"WEB_STREAM {len(books)} {books[-1] if books else ''} {error.code().name}")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        serve(*sys.argv[2:])
    elif mode == "web":
        web(*sys.argv[2:])
    elif mode == "client":
        client(*sys.argv[2:])
    else:
        sys.exit(f"unknown mode {mode}")
