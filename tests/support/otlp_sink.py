# Tiny OTLP trace sink: OTLP/HTTP (protobuf or JSON) on :HTTP_PORT/v1/traces and OTLP/gRPC on :GRPC_PORT.
# GET /spans returns received spans as JSON; DELETE /spans clears them.
# The verified stand-in, extended here to also report each span's kind, attributes and
# resource attributes (tests/tracing_export.rs asserts on them).
import json, sys, threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import grpc
from google.protobuf.json_format import MessageToDict, Parse
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts, trace_service_pb2_grpc as tsg
from opentelemetry.proto.trace.v1 import trace_pb2

SPANS, LOCK = [], threading.Lock()
def value(v):  # an OTLP AnyValue as JSON (scalars; anything else as its text form)
    which = v.WhichOneof("value")
    return getattr(v, which) if which in ("string_value", "bool_value", "int_value", "double_value") else str(v)
def attrs(kvs):
    return {a.key: value(a.value) for a in kvs}
def record(req, via):
    with LOCK:
        for rs in req.resource_spans:
            svc = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), None)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    SPANS.append({"via": via, "service": svc, "name": s.name, "trace_id": s.trace_id.hex(),
                                  "span_id": s.span_id.hex(), "parent_span_id": s.parent_span_id.hex(),
                                  "kind": trace_pb2.Span.SpanKind.Name(s.kind), "attributes": attrs(s.attributes),
                                  "resource": attrs(rs.resource.attributes)})

class Http(BaseHTTPRequestHandler):
    def _reply(self, code, body, ctype):
        self.send_response(code); self.send_header("Content-Type", ctype); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        if self.path != "/v1/traces": return self._reply(404, b"", "text/plain")
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        req = ts.ExportTraceServiceRequest()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            Parse(raw, req); record(req, "http/json"); return self._reply(200, b"{}", "application/json")
        req.ParseFromString(raw); record(req, "http/protobuf")
        self._reply(200, ts.ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")
    def do_GET(self):
        with LOCK: self._reply(200, json.dumps(SPANS).encode(), "application/json")
    def do_DELETE(self):
        with LOCK: SPANS.clear()
        self._reply(204, b"", "text/plain")
    def log_message(self, *a): pass

class Grpc(tsg.TraceServiceServicer):
    def Export(self, request, context):
        record(request, "grpc"); return ts.ExportTraceServiceResponse()

http_port, grpc_port = int(sys.argv[1]), int(sys.argv[2])
g = grpc.server(futures.ThreadPoolExecutor(4)); tsg.add_TraceServiceServicer_to_server(Grpc(), g)
g.add_insecure_port(f"127.0.0.1:{grpc_port}"); g.start()
print(f"otlp sink http=127.0.0.1:{http_port} grpc=127.0.0.1:{grpc_port}", flush=True)
ThreadingHTTPServer(("127.0.0.1", http_port), Http).serve_forever()
