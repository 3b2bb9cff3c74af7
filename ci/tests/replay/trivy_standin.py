#!/usr/bin/env python3
"""Trivy stand-in for the replay tier (installed as /usr/local/bin/trivy in its image).

It accepts exactly the `trivy image` command line Trivy documents (anything else fails like
Trivy's CLI: `Error: unknown flag: --x`, exit 1), opens the image archive given with
--input (a `docker save` archive or an OCI layout tarball), and writes a report in the
requested format for THAT image: schema-v2 JSON with its ImageID, DiffIDs, labels and OS
(read from the image's own /etc/os-release), SARIF 2.1.0 or CycloneDX 1.6 with its Python
packages. It has no vulnerability database, so it reports no vulnerabilities: the scan's
plumbing is proven by the replay, its findings are not. Standard library only.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import sys
import tarfile
import uuid
from typing import Any

VERSION = os.environ.get("TRIVY_STANDIN_VERSION", "0.68.2")
FORMATS = {"table", "json", "template", "sarif", "cyclonedx", "spdx", "spdx-json", "github", "cosign-vuln"}
SEVERITIES = {"UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"}
# `trivy image` flags that take a value, and boolean ones (Trivy 0.68 `trivy image --help`).
VALUE_FLAGS = {
    "--input": "input",
    "--format": "format",
    "-f": "format",
    "--output": "output",
    "-o": "output",
    "--severity": "severity",
    "-s": "severity",
    "--exit-code": "exit_code",
    "--ignorefile": "ignorefile",
    "--scanners": "scanners",
    "--pkg-types": "pkg_types",
    "--cache-dir": "cache_dir",
    "--timeout": "timeout",
    "--template": "template",
    "-t": "template",
    "--config": "config",
    "-c": "config",
    "--db-repository": "db_repository",
}
BOOL_FLAGS = {
    "--ignore-unfixed",
    "--quiet",
    "-q",
    "--no-progress",
    "--debug",
    "-d",
    "--skip-db-update",
    "--list-all-pkgs",
    "--offline-scan",
}


def fail(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(1)


def parse(argv: list[str]) -> dict[str, Any]:
    if not argv or argv[0] in ("-v", "--version", "version"):
        print(f"Version: {VERSION}")
        sys.exit(0)
    if argv[0] != "image":
        fail(f'unknown command "{argv[0]}" for "trivy" (this stand-in replays `trivy image` only)')
    opts: dict[str, Any] = {"format": os.environ.get("TRIVY_FORMAT") or "table", "flags": set(), "targets": []}
    args = argv[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if name in VALUE_FLAGS:
            if eq:
                value = inline
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                fail(f"flag needs an argument: {name}")
            opts[VALUE_FLAGS[name]] = value
        elif arg in BOOL_FLAGS:
            opts["flags"].add(arg.lstrip("-"))
        elif arg.startswith("-"):
            fail(f"unknown flag: {name}")
        else:
            opts["targets"].append(arg)
        i += 1
    if opts["format"] not in FORMATS:
        fail(f'invalid argument "{opts["format"]}" for "-f, --format" flag: must be one of {sorted(FORMATS)}')
    for sev in str(opts.get("severity", "UNKNOWN")).split(","):
        if sev not in SEVERITIES:
            fail(f'invalid argument "{sev}" for "-s, --severity" flag')
    if bool(opts.get("input")) == bool(opts["targets"]):
        fail('"image" requires exactly one of --input ARCHIVE or an image name')
    if opts["targets"]:
        fail("this stand-in scans archives only (--input); pulling an image by name needs a registry")
    return opts


def _read(outer: tarfile.TarFile, name: str) -> bytes:
    member = outer.extractfile(name)
    if member is None:
        fail(f"{name}: not a file in the archive")
        raise AssertionError
    raw = member.read()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _layer(outer: tarfile.TarFile, name: str) -> tarfile.TarFile:
    """A layer tarball read in place (docker save stores them uncompressed, OCI may gzip them)."""
    return tarfile.open(fileobj=outer.extractfile(name), mode="r:*")


def load_image(outer: tarfile.TarFile, path: str) -> tuple[str, dict[str, Any], list[tarfile.TarFile], list[str]]:
    """Image id, config, layer tarballs and repo tags of a docker-archive or OCI-layout tarball."""
    names = set(outer.getnames())
    if "manifest.json" in names:
        manifest = json.loads(_read(outer, "manifest.json"))[0]
        config = json.loads(_read(outer, manifest["Config"]))
        layers = [_layer(outer, name) for name in manifest["Layers"]]
        image_id = "sha256:" + manifest["Config"].rsplit("/", 1)[-1].removesuffix(".json")
        return image_id, config, layers, list(manifest.get("RepoTags") or [])
    if "index.json" in names:
        index = json.loads(_read(outer, "index.json"))
        desc = index["manifests"][0]

        def blob(digest: str) -> str:
            return "blobs/" + digest.replace(":", "/")

        manifest = json.loads(_read(outer, blob(desc["digest"])))
        if "manifests" in manifest:
            manifest = json.loads(_read(outer, blob(manifest["manifests"][0]["digest"])))
        config = json.loads(_read(outer, blob(manifest["config"]["digest"])))
        layers = [_layer(outer, blob(layer["digest"])) for layer in manifest["layers"]]
        tag = desc.get("annotations", {}).get("org.opencontainers.image.ref.name")
        return manifest["config"]["digest"], config, layers, [tag] if tag else []
    fail(f"{path}: neither a docker archive (manifest.json) nor an OCI layout (index.json)")
    raise AssertionError  # unreachable: fail() exits


def inventory(layers: list[tarfile.TarFile]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """OS release fields and Python distributions (name, version) found in the image's layers."""
    os_release: dict[str, str] = {}
    packages: dict[str, str] = {}
    for layer in layers:
        for member in layer:
            name = member.name.lstrip("./")
            if name in ("etc/os-release", "usr/lib/os-release") and member.isfile():
                data = layer.extractfile(member)
                if data is not None:
                    for line in data.read().decode(errors="replace").splitlines():
                        key, _, value = line.partition("=")
                        os_release[key] = value.strip('"')
            elif name.endswith(".dist-info/METADATA") and "site-packages/" in name:
                dist = name.split("/")[-2][: -len(".dist-info")]
                pkg, _, version = dist.partition("-")
                packages[pkg.lower().replace("_", "-")] = version
    return os_release, sorted(packages.items())


def report_json(
    opts: dict[str, Any],
    image: tuple[str, dict[str, Any], list[str]],
    os_rel: dict[str, str],
    pkgs: list[tuple[str, str]],
) -> dict[str, Any]:
    image_id, config, tags = image
    family, name = os_rel.get("ID", "unknown"), os_rel.get("VERSION_ID", "")
    results: list[dict[str, Any]] = [
        {"Target": f"{opts['input']} ({family} {name})", "Class": "os-pkgs", "Type": family}
    ]
    if pkgs:
        lang: dict[str, Any] = {"Target": "Python", "Class": "lang-pkgs", "Type": "python-pkg"}
        if "list-all-pkgs" in opts["flags"]:
            lang["Packages"] = [{"Name": n, "Version": v} for n, v in pkgs]
        results.append(lang)
    return {
        "SchemaVersion": 2,
        "CreatedAt": dt.datetime.now(dt.UTC).isoformat(),
        "ArtifactName": opts["input"],
        "ArtifactType": "container_image",
        "Metadata": {
            "OS": {"Family": family, "Name": name},
            "ImageID": image_id,
            "DiffIDs": config.get("rootfs", {}).get("diff_ids", []),
            "RepoTags": tags,
            "RepoDigests": [],
            "ImageConfig": config,
        },
        "Results": results,
    }


def render(opts: dict[str, Any], report: dict[str, Any], pkgs: list[tuple[str, str]]) -> str:
    fmt = opts["format"]
    name = report["ArtifactName"]
    if fmt == "json":
        return json.dumps(report, indent=2)
    if fmt == "sarif":
        driver = {"fullName": "Trivy Vulnerability Scanner", "name": "Trivy", "version": VERSION, "rules": []}
        run = {"tool": {"driver": driver}, "results": [], "columnKind": "utf16CodeUnits"}
        run["properties"] = {"imageName": name, "repoTags": report["Metadata"]["RepoTags"], "repoDigests": []}
        return json.dumps({"version": "2.1.0", "runs": [run]}, indent=2)
    if fmt == "cyclonedx":
        tool = {"type": "application", "group": "aquasecurity", "name": "trivy", "version": VERSION}
        bom = {
            "bomFormat": "CycloneDX",
            "specVersion": "1.6",
            "serialNumber": f"urn:uuid:{uuid.uuid4()}",
            "version": 1,
            "metadata": {
                "timestamp": report["CreatedAt"],
                "tools": {"components": [tool]},
                "component": {"bom-ref": name, "type": "container", "name": name},
            },
            "components": [
                {"bom-ref": purl, "type": "library", "name": n, "version": v, "purl": purl}
                for n, v in pkgs
                for purl in [f"pkg:pypi/{n}@{v}"]
            ],
            "dependencies": [],
            "vulnerabilities": [],
        }
        return json.dumps(bom, indent=2)
    if fmt == "table":
        return "\n".join(f"{r['Target']} ({r['Type']})\nTotal: 0" for r in report["Results"])
    fail(f"format {fmt} is valid for Trivy but not replayed by this stand-in")
    raise AssertionError


def main(argv: list[str]) -> int:
    opts = parse(argv)
    try:
        outer = tarfile.open(opts["input"])  # noqa: SIM115 - closed by the `with outer` below
    except (OSError, tarfile.TarError) as exc:
        fail(f"unable to open {opts['input']} as an image archive: {exc}")
        raise AssertionError from exc
    with outer:
        image_id, config, layers, tags = load_image(outer, opts["input"])
        os_rel, pkgs = inventory(layers)
    report = report_json(opts, (image_id, config, tags), os_rel, pkgs)
    text = render(opts, report, pkgs)
    if opts.get("output"):
        with open(opts["output"], "w", encoding="utf-8") as out:
            out.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    if "quiet" not in opts["flags"] and "q" not in opts["flags"]:
        print(f"INFO	[stand-in] trivy {VERSION}: {len(pkgs)} Python packages, 0 vulnerabilities", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
