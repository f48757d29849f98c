#!/usr/bin/env python3
"""Tests of helm/fortress-sidecar through Helm's own Go SDK (PyPI `helm-python-sdk`, imported
as `helm_python`; renders and lints offline, no helm binary, no cluster).

    FORTRESS_BIN=target/debug/fortress python3 tests/helm/test_chart.py

Run by tests/helm_chart.rs. Fails (exit 1) when helm_python is missing: `pip install
helm-python-sdk`. Every documented setup is a values file under helm/fortress-sidecar/ci/;
each is linted, rendered, asserted on, and its rendered fortress.yaml passes
`fortress check --offline` (the production startup rules).
"""

import copy
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "helm", "fortress-sidecar")
CI = sorted(glob.glob(os.path.join(CHART, "ci", "*-values.yaml")))
SETUPS = {"tls", "ingress", "native-sidecar", "networkpolicy", "monitoring", "jwks-keys"}

try:
    import helm_python as helm
except ImportError:
    print("FAIL: the Python module helm_python is missing: pip install helm-python-sdk", file=sys.stderr)
    sys.exit(1)

FORTRESS = os.environ.get("FORTRESS_BIN") or os.path.join(ROOT, "target", "debug", "fortress")


def load(name):
    with open(os.path.join(CHART, "ci", f"{name}-values.yaml")) as f:
        return helm.values_from_yaml(f.read())


def render(values):
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values=values, name="shop", namespace="prod")
    objs = {}
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            objs["NOTES"] = text
            continue
        if not text.strip():
            continue
        doc = helm.values_from_yaml(text)
        if doc:
            objs[(doc["kind"], doc["metadata"]["name"])] = doc
    return objs


def render_error(values):
    try:
        render(values)
    except helm.HelmError as e:
        return str(e)
    raise AssertionError("rendered, expected a failure")


def deployment(objs):
    return objs[("Deployment", "shop-fortress-sidecar")]


def containers(objs):
    spec = deployment(objs)["spec"]["template"]["spec"]
    return spec.get("containers", []), spec.get("initContainers", [])


def fortress_container(objs):
    main, init = containers(objs)
    found = [c for c in main + init if c["name"] == "fortress"]
    assert len(found) == 1, found
    return found[0]


def fortress_config(objs):
    cm = objs[("ConfigMap", "shop-fortress-sidecar-config")]
    return helm.values_from_yaml(cm["data"]["fortress.yaml"]), cm["data"]["fortress.yaml"]


def check_config(text, name):
    """`fortress check --offline` on the rendered config; files the ci values mount are
    provided from tests/keys."""
    d = tempfile.mkdtemp()
    try:
        keys = os.path.join(d, "fortress-keys")
        os.makedirs(keys)
        shutil.copy(os.path.join(ROOT, "tests", "keys", "rsa.pub.pem"), os.path.join(keys, "signing.pub.pem"))
        jwks = os.path.join(d, "fortress-jwks")
        os.makedirs(jwks)
        shutil.copy(os.path.join(ROOT, "tests", "keys", "rsa.jwk.json"), os.path.join(jwks, "jwks.json"))
        text = text.replace("/etc/fortress-keys/", keys + "/").replace("/etc/fortress-jwks/", jwks + "/")
        path = os.path.join(d, "fortress.yaml")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([FORTRESS, "check", "--offline", path], capture_output=True, text=True)
        assert r.returncode == 0, f"{name}: fortress check --offline refused the rendered config:\n{r.stderr}\n{text}"
        assert "ok (policy hash" in r.stdout, r.stdout
    finally:
        shutil.rmtree(d)


# ---------------------------------------------------------------------------------------
# Tests


def test_every_documented_setup_has_a_values_file():
    names = {os.path.basename(p)[: -len("-values.yaml")] for p in CI}
    assert names == SETUPS, names
    readme = open(os.path.join(CHART, "README.md")).read()
    for n in names:
        assert f"ci/{n}-values.yaml" in readme, f"README does not document ci/{n}-values.yaml"


def test_default_values_fail_with_what_to_set():
    msg = render_error(None)
    assert "fortress-sidecar cannot be installed with these values" in msg, msg
    assert "set `mode`: `tls`" in msg and "`ingress`" in msg, msg
    assert "tls.secretName" in msg and "ingress.trustedProxies" in msg, msg
    assert "set app.image" in msg and "127.0.0.1" in msg, msg
    assert "set fortress.policy" in msg, msg


def test_each_mode_names_its_missing_setting():
    v = load("tls")
    v["tls"]["secretName"] = ""
    msg = render_error(v)
    assert "mode is `tls`: set tls.secretName" in msg, msg
    v = load("ingress")
    v["ingress"]["trustedProxies"] = []
    msg = render_error(v)
    assert "mode is `ingress`: set ingress.trustedProxies" in msg, msg
    v = load("ingress")
    v["fortress"]["server"]["listen"] = "0.0.0.0:1"
    msg = render_error(v)
    assert "additional properties 'listen' not allowed" in msg, msg
    v = load("tls")
    v["terminationGracePeriodSeconds"] = 35
    msg = render_error(v)
    assert "terminationGracePeriodSeconds (35) must be longer than shutdown.delaySeconds + shutdown.drainSeconds (35)" in msg, msg
    v = load("tls")
    v["ports"] = {"fortress": 8443, "probes": 8080, "admin": 9901}
    msg = render_error(v)
    assert "must all differ" in msg, msg


def test_lint_passes_for_every_setup():
    for path in CI:
        with open(path) as f:
            values = helm.values_from_yaml(f.read())
        report = helm.lint(CHART, values, strict=True)
        assert report["errors"] == [], (path, report)
        bad = [m for m in report["messages"] if m["severity"] >= 2]
        assert not bad, (path, bad)


def test_schema_rejects_an_unknown_policy_key():
    with helm.Chart.load(CHART) as chart:
        for mutate, needle in [
            (lambda v: v["fortress"]["policy"].__setitem__("colour", "red"), "'colour' not allowed"),
            (lambda v: v["fortress"]["policy"]["routes"][0].__setitem__("publik", True), "'publik' not allowed"),
            (lambda v: v["fortress"]["policy"].__setitem__("default", "maybe"), "/fortress/policy/default"),
            (lambda v: v["fortress"]["policy"].__setitem__("server", {}), "'server' not allowed"),
            (lambda v: v["fortress"]["server"].__setitem__("timeouts", {"shutdown_delay": "1s"}), "'shutdown_delay' not allowed"),
            (lambda v: v.__setitem__("mod", "tls"), "'mod' not allowed"),
        ]:
            v = load("tls")
            v["fortress"].setdefault("server", {})
            mutate(v)
            try:
                chart.validate_schema(v)
            except helm.HelmValuesError as e:
                assert needle in str(e), (needle, str(e))
            else:
                raise AssertionError(f"schema accepted {needle}")
            # install/upgrade render the same validation
            assert needle in render_error(v)
        for path in CI:
            with open(path) as f:
                chart.validate_schema(helm.values_from_yaml(f.read()))


def test_every_setup_renders_a_safe_pod():
    for path in CI:
        name = os.path.basename(path)[: -len("-values.yaml")]
        v = load(name)
        objs = render(v)
        ports = v.get("ports", {"fortress": 8443, "probes": 9902, "admin": 9901})
        app_port = v["app"].get("port", 8080)
        pod = deployment(objs)["spec"]["template"]["spec"]
        main, init = containers(objs)
        # The sidecar beside the app.
        assert [c["name"] for c in main if c["name"] == "app"] == ["app"], (name, main)
        f = fortress_container(objs)
        assert f["args"][:3] == ["run", "--config", "/etc/fortress/fortress.yaml"], f["args"]
        # Probes on the probe listener; the container ports are fortress's and the probes'.
        cports = {p["name"]: p["containerPort"] for p in f["ports"]}
        proxy = "https" if v["mode"] == "tls" else "http"
        assert cports == {proxy: ports["fortress"], "probes": ports["probes"]}, (name, cports)
        for probe, path_ in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", "/livez")]:
            assert f[probe]["httpGet"] == {"path": path_, "port": "probes"}, (name, probe, f[probe])
        # The app exposes no port (it listens on 127.0.0.1).
        app = [c for c in main if c["name"] == "app"][0]
        assert "ports" not in app, (name, app)
        # The config matches the ports (one source of truth).
        cfg, text = fortress_config(objs)
        s = cfg["server"]
        assert s["listen"] == f"0.0.0.0:{ports['fortress']}", s
        assert s["probes"] == f"0.0.0.0:{ports['probes']}", s
        assert s["admin"] == f"127.0.0.1:{ports['admin']}", s
        assert s["upstream"] == f"http://127.0.0.1:{app_port}", s
        assert s["environment"] == "production", s
        check_config(text, name)
        # Security context.
        sc = f["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, sc
        assert sc["readOnlyRootFilesystem"] is True, sc
        assert sc["allowPrivilegeEscalation"] is False, sc
        assert sc["capabilities"] == {"drop": ["ALL"]}, sc
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, sc
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, pod["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert f["resources"]["limits"]["memory"] and f["resources"]["requests"]["cpu"], f["resources"]
        # Grace period longer than delay + drain; the app outlives fortress's delay.
        delay, drain = 5, 30
        assert pod["terminationGracePeriodSeconds"] > delay + drain, pod["terminationGracePeriodSeconds"]
        assert app["lifecycle"]["preStop"] == {"sleep": {"seconds": delay + 1}}, app["lifecycle"]
        assert s["timeouts"]["shutdown_grace"] == f"{drain}s"
        # Restart-only settings roll the pods.
        ann = deployment(objs)["spec"]["template"]["metadata"]["annotations"]
        assert len(ann["checksum/fortress-restart"]) == 64, ann
        assert ann["prometheus.io/port"] == str(ports["probes"]), ann
        # The main Service: fortress's port only.
        svc = objs[("Service", "shop-fortress-sidecar")]
        assert [(p["name"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(proxy, proxy)], svc
        assert svc["spec"]["selector"] == deployment(objs)["spec"]["selector"]["matchLabels"]
        # A PodDisruptionBudget.
        pdb = objs[("PodDisruptionBudget", "shop-fortress-sidecar")]
        assert pdb["spec"]["maxUnavailable"] == 1, pdb
        notes = objs["NOTES"]
        assert f"fortress :{ports['fortress']} -> app 127.0.0.1:{app_port}" in notes, notes


def test_tls_setup():
    objs = render(load("tls"))
    f = fortress_container(objs)
    cfg, _ = fortress_config(objs)
    assert cfg["server"]["tls"] == {"cert": "/etc/fortress-tls/tls.crt", "key": "/etc/fortress-tls/tls.key"}
    assert "trusted_proxies" not in cfg["server"]
    mounts = {m["name"]: m for m in f["volumeMounts"]}
    assert mounts["fortress-tls"] == {"name": "fortress-tls", "mountPath": "/etc/fortress-tls", "readOnly": True}
    vols = {v["name"]: v for v in deployment(objs)["spec"]["template"]["spec"]["volumes"]}
    assert vols["fortress-tls"]["secret"] == {"secretName": "my-app-tls"}
    svc = objs[("Service", "shop-fortress-sidecar")]
    assert svc["spec"]["ports"][0]["port"] == 443
    env = {e["name"]: e for e in f["env"]}
    assert env["JWT_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "my-app-jwt", "key": "jwt-secret"}
    notes = objs["NOTES"]
    assert "Fortress terminates TLS with Secret my-app-tls" in notes and "curl --cacert" in notes, notes
    assert "https_required" not in notes


def test_ingress_setup():
    objs = render(load("ingress"))
    cfg, _ = fortress_config(objs)
    assert cfg["server"]["trusted_proxies"] == ["10.42.0.0/16"]
    assert cfg["server"]["require_https"] is True
    assert "tls" not in cfg["server"]
    # fortress.server extras are merged; the chart's timeouts win.
    assert cfg["server"]["max_body"] == "2MiB"
    assert cfg["server"]["timeouts"] == {"upstream_response": "60s", "shutdown_grace": "30s", "shutdown_delay": "5s"}
    vols = [v["name"] for v in deployment(objs)["spec"]["template"]["spec"]["volumes"]]
    assert "fortress-tls" not in vols, vols
    svc = objs[("Service", "shop-fortress-sidecar")]
    assert svc["spec"]["ports"][0]["port"] == 80 and svc["spec"]["ports"][0]["name"] == "http"
    assert "Plain HTTP from the ingress controller (trusted: 10.42.0.0/16)" in objs["NOTES"]


def test_native_sidecar_setup():
    objs = render(load("native-sidecar"))
    main, init = containers(objs)
    assert [c["name"] for c in main] == ["app"], main
    assert [c["name"] for c in init] == ["fortress"], init
    assert init[0]["restartPolicy"] == "Always"
    cfg, _ = fortress_config(objs)
    # Stopped after the app: no delay (it would only serve 502s).
    assert cfg["server"]["timeouts"]["shutdown_delay"] == "0s", cfg["server"]["timeouts"]
    assert "native sidecar" in objs["NOTES"]
    # The classic setup has no init container.
    main, init = containers(render(load("tls")))
    assert init == [] and [c["name"] for c in main] == ["app", "fortress"]


def test_networkpolicy_setup():
    objs = render(load("networkpolicy"))
    np = objs[("NetworkPolicy", "shop-fortress-sidecar")]
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert np["spec"]["podSelector"]["matchLabels"] == deployment(objs)["spec"]["selector"]["matchLabels"]
    rules = np["spec"]["ingress"]
    assert [r["ports"] for r in rules] == [[{"port": 8443, "protocol": "TCP"}], [{"port": 9902, "protocol": "TCP"}]], rules
    assert rules[0]["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert rules[1]["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    # Nothing admits the app's port or the admin port.
    ports = [p["port"] for r in rules for p in r["ports"]]
    assert 8080 not in ports and 9901 not in ports
    assert "networkPolicy.enabled is false" not in objs["NOTES"]
    # Off by default.
    assert not any(k[0] == "NetworkPolicy" for k in render(load("tls")) if isinstance(k, tuple))


def test_monitoring_setup():
    objs = render(load("monitoring"))
    svc = objs[("Service", "shop-fortress-sidecar")]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["https"], svc
    assert svc["metadata"]["labels"]["app.kubernetes.io/component"] == "proxy"
    m = objs[("Service", "shop-fortress-sidecar-metrics")]
    assert m["spec"]["type"] == "ClusterIP"
    assert m["spec"]["ports"] == [{"name": "probes", "port": 9902, "targetPort": "probes", "protocol": "TCP"}]
    sm = objs[("ServiceMonitor", "shop-fortress-sidecar")]
    sel = sm["spec"]["selector"]["matchLabels"]
    assert sel["app.kubernetes.io/component"] == "metrics"
    assert all(m["metadata"]["labels"].get(k) == v for k, v in sel.items()), (sel, m["metadata"]["labels"])
    assert svc["metadata"]["labels"]["app.kubernetes.io/component"] != "metrics"
    assert sm["spec"]["endpoints"][0]["port"] == "probes" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dash = objs[("ConfigMap", "shop-fortress-sidecar-dashboard")]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["fortress.json"])["panels"], "dashboard JSON"
    rule = objs[("PrometheusRule", "shop-fortress-sidecar")]
    assert rule["spec"]["groups"], rule
    assert "Service shop-fortress-sidecar-metrics:9902" in objs["NOTES"]
    # Without monitoring there is no metrics Service.
    assert ("Service", "shop-fortress-sidecar-metrics") not in render(load("tls"))


def test_jwks_keys_setup_mounts_extra_volumes():
    objs = render(load("jwks-keys"))
    f = fortress_container(objs)
    mounts = {m["mountPath"]: m["name"] for m in f["volumeMounts"]}
    assert mounts["/etc/fortress-keys"] == "jwt-keys" and mounts["/etc/fortress-jwks"] == "jwks"
    assert mounts["/etc/fortress-ca"] == "corporate-ca" and mounts["/var/lib/fortress"] == "fortress-data"
    vols = {v["name"]: v for v in deployment(objs)["spec"]["template"]["spec"]["volumes"]}
    assert vols["jwt-keys"]["secret"] == {"secretName": "my-app-jwt-keys"}
    assert vols["jwks"]["configMap"] == {"name": "my-app-jwks"}
    assert "JWT_SECRET_KEY is not provided" in objs["NOTES"]


def test_ports_have_one_source_of_truth():
    v = load("monitoring")
    v["ports"] = {"fortress": 10443, "probes": 10902, "admin": 10901}
    v["app"]["port"] = 7000
    objs = render(v)
    f = fortress_container(objs)
    cfg, _ = fortress_config(objs)
    assert {p["name"]: p["containerPort"] for p in f["ports"]} == {"https": 10443, "probes": 10902}
    assert cfg["server"]["listen"] == "0.0.0.0:10443" and cfg["server"]["probes"] == "0.0.0.0:10902"
    assert cfg["server"]["admin"] == "127.0.0.1:10901" and cfg["server"]["upstream"] == "http://127.0.0.1:7000"
    assert objs[("Service", "shop-fortress-sidecar-metrics")]["spec"]["ports"][0]["port"] == 10902
    ann = deployment(objs)["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == "10902"


def test_checksum_follows_restart_only_settings():
    def checksum(v):
        return deployment(render(v))["spec"]["template"]["metadata"]["annotations"]["checksum/fortress-restart"]

    base = checksum(load("tls"))
    v = load("tls")
    v["fortress"]["policy"]["routes"].append({"name": "more", "match": {"path": "/more"}, "public": True})
    assert checksum(v) == base, "a route change is hot-reloaded, not a restart"
    v = load("tls")
    v["fortress"]["policy"]["audit"]["include"] = ["all"]
    assert checksum(v) != base, "audit settings need a restart"
    v = load("tls")
    v["ports"] = {"fortress": 8443, "probes": 9903, "admin": 9901}
    assert checksum(v) != base
    v = load("tls")
    v["fortress"]["server"] = {"max_connections": 100}
    assert checksum(v) != base


def main():
    if not os.path.exists(FORTRESS):
        print(f"FAIL: no fortress binary at {FORTRESS} (set FORTRESS_BIN)", file=sys.stderr)
        return 1
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"ok   {name}")
        except Exception:
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"helm chart: {len(tests) - failed} passed, {failed} failed (helm SDK {helm.helm_sdk_version()})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
