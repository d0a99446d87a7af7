"""The checks of scripts/validate-k8s.sh (run it, not this file directly)."""

import argparse
import copy
import glob
import os
import subprocess
import sys
import tempfile

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

# Kinds whose schemas kubernetes-validate does not ship (CRDs of other projects or ours).
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ParsecCluster"}

failures = []
counts = {"validated": 0, "custom": 0, "cert-manager": 0}


def visit(node, fn):
    """Calls fn on every object node of a JSON schema, depth first from the root."""
    if isinstance(node, dict):
        fn(node)
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return
    for child in children:
        visit(child, fn)


def reject_unknown_fields(node):
    """Every object schema with properties gets additionalProperties: false (what the API
    server's strict field validation does), nullable ones too."""
    types = node.get("type")
    if (
        (types == "object" or (isinstance(types, list) and "object" in types))
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in node
    ):
        node["additionalProperties"] = False


def certificate_checker():
    """cert-manager's Certificate, checked against models generated from cert-manager's own CRDs
    (PyPI cloudcoil-models-cert-manager): the pydantic model (types, enums, required fields) and
    its JSON schema made strict (unknown fields fail)."""
    from cloudcoil.models.cert_manager.v1 import Certificate

    schema = Certificate.model_json_schema(by_alias=True)
    visit(schema, reject_unknown_fields)
    schema["properties"]["metadata"] = {"type": "object"}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    validator = jsonschema.Draft202012Validator(schema)

    def check(doc):
        errors = [f"{e.message} at {list(e.path)}" for e in validator.iter_errors(doc)]
        try:
            Certificate.model_validate(doc)
        except Exception as e:  # pydantic.ValidationError, reported whole
            errors.append(str(e))
        return errors

    return check


check_certificate = certificate_checker()


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def documents(text, source):
    for index, doc in enumerate(yaml.safe_load_all(text)):
        if doc:
            yield f"{source}#{index}", doc


def validate_objects(text, source, version):
    for where, doc in documents(text, source):
        kind = doc.get("kind")
        if kind == "Certificate" and doc.get("apiVersion") == "cert-manager.io/v1":
            errors = check_certificate(doc)
            if errors:
                fail(f"{where} Certificate/{doc['metadata'].get('name')}: {errors}")
            else:
                counts["cert-manager"] += 1
            continue
        if kind in CUSTOM_KINDS:
            counts["custom"] += 1
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            counts["validated"] += 1
        except kubernetes_validate.utils.ValidationError as e:
            fail(f"{where} {kind}/{doc['metadata'].get('name')}: {e.message} at {list(e.path)}")
        except kubernetes_validate.utils.SchemaNotFoundError as e:
            fail(f"{where} {kind}: no schema ({e})")


def strict_schema(schema):
    """An openAPIV3Schema as JSON schema, with unknown fields rejected like the API server's
    pruning would drop them (strict field validation)."""
    schema = copy.deepcopy(schema)

    def openapi_to_json_schema(node):
        if node.get("nullable"):
            t = node.get("type")
            if isinstance(t, str):
                node["type"] = [t, "null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = node["enum"] + [None]
        if node.get("x-kubernetes-int-or-string"):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]

    visit(schema, openapi_to_json_schema)
    visit(schema, reject_unknown_fields)
    # metadata is validated by the API server itself; apiVersion and kind are implicit.
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"type": "string", "enum": ["parsec.dev/v1alpha1"]}
    schema["properties"]["kind"] = {"type": "string", "enum": ["ParsecCluster"]}
    return schema


def check_clusters(crd, operator, version):
    schema = strict_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    validator = jsonschema.Draft7Validator(schema)
    examples = sorted(glob.glob("manifests/examples/*.yaml")) + sorted(
        glob.glob("operator/tests/fixtures/*.yaml")
    )
    for path in examples:
        for where, doc in documents(open(path).read(), path):
            errors = [f"{e.message} at {list(e.path)}" for e in validator.iter_errors(doc)]
            if errors:
                fail(f"{where} against the CRD schema: {errors}")
            else:
                counts["custom"] += 0
                print(f"ok   {where} is a valid ParsecCluster")
        # And the operator renders it into valid Kubernetes objects.
        rendered = subprocess.run(
            [
                operator,
                "render",
                "--file",
                path,
                "--with-prometheus-operator",
                "--with-cert-manager",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        validate_objects(rendered, f"render({path})", version)
    # Negative cases: the schema must reject these.
    base = yaml.safe_load(open("manifests/examples/dev.yaml"))
    bad = {
        "unknown field": lambda d: d["spec"].__setitem__("colour", "blue"),
        "replicas above 7": lambda d: d["spec"]["shards"].__setitem__("replicas", 9),
        "zero shards": lambda d: d["spec"]["shards"].__setitem__("count", 0),
        "unknown runner": lambda d: d["spec"]["agents"].__setitem__("runners", ["wasm"]),
        "bad fee recipient": lambda d: d["spec"]["chain"].__setitem__("feeRecipient", "0x12"),
        "missing image": lambda d: d["spec"].pop("image"),
        "tls duration in days": lambda d: d["spec"].__setitem__(
            "tls", {"certManager": {"issuerRef": {"name": "ca"}, "duration": "90d"}}
        ),
        "unknown issuer kind": lambda d: d["spec"].__setitem__(
            "tls", {"certManager": {"issuerRef": {"name": "ca", "kind": "AcmeIssuer"}}}
        ),
        "bad tls secret name": lambda d: d["spec"].__setitem__("tls", {"secretName": "My_Certs"}),
        "unknown tls field": lambda d: d["spec"].__setitem__(
            "tls", {"secretName": "certs", "insecure": True}
        ),
        "unknown networkPolicy field": lambda d: d["spec"].__setitem__(
            "networkPolicy", {"enabled": True, "allowAll": True}
        ),
    }
    for name, mutate in bad.items():
        doc = copy.deepcopy(base)
        mutate(doc)
        if not list(validator.iter_errors(doc)):
            fail(f"the CRD schema accepts an invalid ParsecCluster ({name})")
        else:
            print(f"ok   the CRD schema rejects: {name}")


def check_certificate_checker():
    """The Certificate check itself rejects what cert-manager's CRD would."""
    good = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": "x"},
        "spec": {"secretName": "x", "dnsNames": ["a.b"], "issuerRef": {"name": "ca"}},
    }
    if check_certificate(good):
        fail(f"a valid Certificate is rejected: {check_certificate(good)}")
    bad = {
        "unknown field": lambda d: d["spec"].__setitem__("colour", "blue"),
        "unknown usage": lambda d: d["spec"].__setitem__("usages", ["server auth", "world domination"]),
        "unknown key algorithm": lambda d: d["spec"].__setitem__("privateKey", {"algorithm": "DSA"}),
        "missing secretName": lambda d: d["spec"].pop("secretName"),
    }
    for name, mutate in bad.items():
        doc = copy.deepcopy(good)
        mutate(doc)
        if not check_certificate(doc):
            fail(f"the Certificate check accepts an invalid Certificate ({name})")
        else:
            print(f"ok   the Certificate check rejects: {name}")


def check_chart(version):
    chart_dir = "charts/parsec-operator"
    report = helm.lint(chart_dir, strict=True, kube_version=f"v{version}")
    for message in report.get("messages", []):
        print(f"lint {message}")
        if message.get("severity", 0) >= 2:
            fail(f"helm lint: {message}")
    for error in report.get("errors", []) or []:
        fail(f"helm lint: {error}")
    value_sets = {
        "defaults": {},
        "everything-on": {
            "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
            "dashboards": {"enabled": True},
            "imagePullSecrets": ["registry"],
            "nodeSelector": {"workload": "operators"},
            "image": {"tag": "0.2.0"},
        },
        "no-crds": {"crds": {"install": False}},
    }
    for label, values in value_sets.items():
        with helm.Chart.load(chart_dir) as chart:
            manifests = chart.render(values, name="parsec", namespace="parsec-system")
        text = "\n---\n".join(
            body
            for path, body in sorted(manifests.items())
            if body.strip() and not path.endswith("NOTES.txt")
        )
        kinds = [str(d.get("kind")) for _, d in documents(text, label)]
        print(f"ok   helm rendered the chart ({label}): {', '.join(kinds)}")
        if label == "no-crds" and "CustomResourceDefinition" in kinds:
            fail("crds.install=false still renders the CRD")
        if label == "defaults" and "CustomResourceDefinition" not in kinds:
            fail("the chart does not install the CRD by default")
        validate_objects(text, f"chart({label})", version)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--operator", required=True)
    parser.add_argument("--kubernetes-version", default="1.37.0")
    args = parser.parse_args()
    version = args.kubernetes_version
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

    for path in sorted(glob.glob("operator/tests/golden/*.yaml")) + [
        "manifests/install.yaml",
        "manifests/operator.yaml",
    ]:
        validate_objects(open(path).read(), path, version)

    check_certificate_checker()
    crd = next(d for _, d in documents(open("crds/parseccluster.yaml").read(), "crd"))
    check_clusters(crd, args.operator, version)
    check_chart(version)

    print(
        f"\n{counts['validated']} objects passed kubernetes-validate --strict "
        f"(Kubernetes {version}); {counts['cert-manager']} cert-manager Certificates passed "
        f"cert-manager's schema; {counts['custom']} custom-resource objects skipped there "
        f"(ParsecCluster is checked against the CRD schema above)."
    )
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
