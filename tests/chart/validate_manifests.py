"""Validates Kubernetes manifests offline against the Kubernetes 1.33 schemas.

    python tests/chart/validate_manifests.py [--kube-version 1.33.0] FILE...

Every document must pass, and none may be skipped silently:

* built-in kinds: kubernetes-validate's bundled OpenAPI schemas, strict (unknown fields
  are errors);
* our kinds (Coordinator, Collection, CollectionAlias): the openAPIV3Schema of the CRDs in
  crds/ (structure, types, enums, required fields, lengths; the CEL rules are not run
  here: tests/crd_validation.rs covers them);
* kinds in EXPLICITLY_UNCHECKED (ServiceMonitor, Argo CD and Flux kinds): no schema is
  available offline; they are reported as such, and tests/chart/ checks their shape.

Anything else — a typo in apiVersion or kind — is an error (kubernetes-validate alone only
warns and passes). Exit code 1 on any error.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO / "crds" / "collections.dev.yaml"

# (apiVersion, kind) with no offline schema, and why it is acceptable.
EXPLICITLY_UNCHECKED = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "Prometheus Operator CRD (not core); "
    "tests/chart/test_chart.py checks its selector and port",
    ("argoproj.io/v1alpha1", "Application"): "Argo CD CRD; tests/chart/test_gitops.py checks it",
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"): "Flux CRD; tests/chart/test_gitops.py checks it",
    ("source.toolkit.fluxcd.io/v1", "GitRepository"): "Flux CRD; tests/chart/test_gitops.py checks it",
}


def load_documents(path: pathlib.Path) -> list[dict]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version in crds/."""
    schemas = {}
    for crd in load_documents(CRDS):
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def structural_to_jsonschema(schema: dict) -> dict:
    """An OpenAPI v3 structural schema as plain JSON Schema: drops the x-kubernetes-*
    extensions, turns `nullable` into a null type, and rejects unknown fields wherever the
    API server would prune them silently."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key.startswith("x-kubernetes-") or key == "nullable":
                continue
            if key == "properties":
                out[key] = {name: structural_to_jsonschema(sub) for name, sub in value.items()}
            elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
                out[key] = structural_to_jsonschema(value)
            elif key in ("allOf", "anyOf", "oneOf"):
                out[key] = [structural_to_jsonschema(sub) for sub in value]
            else:
                out[key] = value
        if schema.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        if ("properties" in out and "additionalProperties" not in out
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    return schema


def validate_custom(doc: dict, schema: dict) -> list[str]:
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    # apiVersion/kind/metadata are checked by the API server, not by the CRD schema.
    props = {k: v for k, v in schema.get("properties", {}).items()
             if k not in ("apiVersion", "kind", "metadata")}
    strict = structural_to_jsonschema({**schema, "properties": props})
    validator = jsonschema.Draft7Validator(strict)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kube-version", default="1.33.0")
    parser.add_argument("files", nargs="+", type=pathlib.Path)
    args = parser.parse_args()

    custom = crd_schemas()
    errors = passed = unchecked = 0
    for path in args.files:
        for doc in load_documents(path):
            api_version, kind = doc.get("apiVersion", "?"), doc.get("kind", "?")
            name = (doc.get("metadata") or {}).get("name", "?")
            what = f"{path}: {kind}/{name} ({api_version})"
            if (api_version, kind) in custom:
                problems = validate_custom(doc, custom[(api_version, kind)])
                for problem in problems:
                    print(f"ERROR {what}: {problem}")
                errors += bool(problems)
                passed += not problems
                continue
            if (api_version, kind) in EXPLICITLY_UNCHECKED:
                print(f"NOTE  {what}: not schema-checked: {EXPLICITLY_UNCHECKED[(api_version, kind)]}")
                unchecked += 1
                continue
            try:
                kubernetes_validate.validate(doc, args.kube_version, strict=True)
                passed += 1
            except kubernetes_validate.ValidationError as error:
                location = ".".join(map(str, error.path)) or "<root>"
                print(f"ERROR {what}: {location}: {error.message}")
                errors += 1
            except kubernetes_validate.SchemaNotFoundError:
                print(f"ERROR {what}: no Kubernetes {args.kube_version} schema for this kind "
                      "(typo in apiVersion or kind?)")
                errors += 1
    print(f"validate_manifests: {passed} valid, {unchecked} not schema-checked (listed above), "
          f"{errors} invalid, against Kubernetes {args.kube_version}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
