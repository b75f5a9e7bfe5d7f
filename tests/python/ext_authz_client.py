"""An independent Envoy ext_authz gRPC client for crates/keyward/tests/it/ext_authz_grpc.rs.

    ext_authz_client.py --target HOST:PORT < checks.json
    ext_authz_client.py --bootstrap examples/envoy/envoy.yaml

Envoy's published protos as compiled by the `xds-protos` package (envoy.service.auth.v3): the
client builds `CheckRequest`s the way Envoy's ext_authz filter fills them, calls
`envoy.service.auth.v3.Authorization/Check` over plain HTTP/2 and prints, on one line, a JSON
list with one result per check:

    {"grpc": "OK" | "<gRPC status name>", "details": str,
     "status": {"code": int, "message": str},
     "ok": {"headers": {name: {"value": str, "action": str}}, "headers_to_remove": [str],
            "response_headers_to_add": {name: str}},
     "denied": {"status": int, "headers": {name: str}, "body": str}}

Each check on stdin is an object:

    {"method": "GET", "path": "/facts", "host": "api.test", "headers": {name: value},
     "header_map": [[name, value], ...],        # instead of headers (encode_raw_headers)
     "source": "203.0.113.7",                   # attributes.source.address.socket_address
     "context_extensions": {name: value},
     "metadata": {name: value},                 # the call's own metadata
     "no_attributes": true,                     # a CheckRequest without attributes
     "no_http": true,                           # attributes.request without http
     "raw_hex": "..."}                          # these bytes as the message instead

With --bootstrap, the file is read as an Envoy bootstrap (`envoy.config.bootstrap.v3.Bootstrap`,
every typed_config resolved against the published protos, unknown fields refused) and a summary
of its ext_authz filter is printed: {"grpc_cluster", "cluster_http2", "cluster_port",
"failure_mode_allow", "status_on_error", "timeout"}.

A missing grpcio, xds-protos or PyYAML is an error (exit 2), never a skip.
"""

import argparse
import json
import sys

try:
    import grpc
    from envoy.config.core.v3 import address_pb2, base_pb2
    from envoy.service.auth.v3 import attribute_context_pb2 as attribute_context
    from envoy.service.auth.v3 import external_auth_pb2 as external_auth
    from envoy.service.auth.v3 import external_auth_pb2_grpc as external_auth_grpc
    import yaml
    from google.protobuf import json_format
    from envoy.config.bootstrap.v3 import bootstrap_pb2
    # The typed_config types the example uses, registered for Any resolution.
    from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
except ImportError as e:  # the Rust test fails on this when KEYWARD_TEST_PYTHON is set
    print(f"grpcio and xds-protos are required (tests/python/requirements.txt): {e}", file=sys.stderr)
    sys.exit(2)

METHOD = "/envoy.service.auth.v3.Authorization/Check"


def request_of(check):
    req = external_auth.CheckRequest()
    if check.get("no_attributes"):
        return req
    attrs = req.attributes
    if check.get("source"):
        attrs.source.address.socket_address.address = check["source"]
        attrs.source.address.socket_address.port_value = 40000
    attrs.destination.address.socket_address.address = "127.0.0.1"
    attrs.destination.address.socket_address.port_value = 10000
    for k, v in check.get("context_extensions", {}).items():
        attrs.context_extensions[k] = v
    if check.get("no_http"):
        attrs.request.time.GetCurrentTime()
        return req
    http = attrs.request.http
    http.id = "check-1"
    http.method = check.get("method", "GET")
    http.path = check.get("path", "/")
    http.host = check.get("host", "")
    http.scheme = "http"
    http.protocol = "HTTP/1.1"
    http.size = -1
    if "header_map" in check:
        for k, v in check["header_map"]:
            http.header_map.headers.add(key=k, raw_value=v.encode("latin-1"))
    else:
        # Envoy puts the pseudo-headers in the map too.
        http.headers[":method"] = http.method
        http.headers[":path"] = http.path
        if http.host:
            http.headers[":authority"] = http.host
        for k, v in check.get("headers", {}).items():
            http.headers[k.lower()] = v
    return req


def options(opts):
    return {o.header.key: {"value": o.header.value, "action": base_pb2.HeaderValueOption.HeaderAppendAction.Name(o.append_action)} for o in opts}


def plain(opts):
    out = {}
    for o in opts:
        out[o.header.key] = o.header.value
    return out


def result_of(resp):
    out = {"grpc": "OK", "details": "", "status": {"code": resp.status.code, "message": resp.status.message}}
    which = resp.WhichOneof("http_response")
    if which == "ok_response":
        ok = resp.ok_response
        out["ok"] = {
            "headers": options(ok.headers),
            "headers_to_remove": list(ok.headers_to_remove),
            "response_headers_to_add": plain(ok.response_headers_to_add),
        }
    elif which == "denied_response":
        d = resp.denied_response
        out["denied"] = {"status": d.status.code, "headers": plain(d.headers), "body": d.body}
    return out


def bootstrap(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    b = json_format.ParseDict(doc, bootstrap_pb2.Bootstrap())
    summary = {}
    for listener in b.static_resources.listeners:
        for chain in listener.filter_chains:
            for nf in chain.filters:
                hcm = http_connection_manager_pb2.HttpConnectionManager()
                if not nf.typed_config.Unpack(hcm):
                    continue
                for hf in hcm.http_filters:
                    ea = ext_authz_pb2.ExtAuthz()
                    if hf.typed_config.Unpack(ea):
                        summary["grpc_cluster"] = ea.grpc_service.envoy_grpc.cluster_name
                        summary["timeout"] = ea.grpc_service.timeout.ToMilliseconds()
                        summary["failure_mode_allow"] = ea.failure_mode_allow
                        summary["status_on_error"] = ea.status_on_error.code
                        summary["transport_api_version"] = ea.transport_api_version
    for c in b.static_resources.clusters:
        if c.name != summary.get("grpc_cluster"):
            continue
        opts = http_protocol_options_pb2.HttpProtocolOptions()
        any_ = c.typed_extension_protocol_options.get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        summary["cluster_http2"] = bool(any_ and any_.Unpack(opts) and opts.explicit_http_config.HasField("http2_protocol_options"))
        ep = c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        summary["cluster_port"] = ep.port_value
    print(json.dumps(summary))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target")
    p.add_argument("--bootstrap")
    args = p.parse_args()
    if args.bootstrap:
        bootstrap(args.bootstrap)
        return
    if not args.target:
        p.error("--target or --bootstrap")
    checks = json.load(sys.stdin)
    results = []
    with grpc.insecure_channel(args.target) as channel:
        stub = external_auth_grpc.AuthorizationStub(channel)
        raw = channel.unary_unary(
            METHOD,
            request_serializer=lambda b: b,
            response_deserializer=external_auth.CheckResponse.FromString,
        )
        for check in checks:
            metadata = tuple(check.get("metadata", {}).items())
            try:
                if "raw_hex" in check:
                    resp = raw(bytes.fromhex(check["raw_hex"]), metadata=metadata, timeout=20)
                else:
                    resp = stub.Check(request_of(check), metadata=metadata, timeout=20)
                results.append(result_of(resp))
            except grpc.RpcError as e:
                results.append({"grpc": e.code().name, "details": e.details() or ""})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
