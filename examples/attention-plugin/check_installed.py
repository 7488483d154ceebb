"""Check the installed example plugin end to end (run by ``nox -s plugin_example``).

``python check_installed.py present``: ``key_blocked`` is discovered through its entry point,
comes from this distribution, and passes the loftr-attention conformance kit.
``python check_installed.py absent`` (with ``LOFTR_ATTENTION_DISABLE_PLUGIN_AUTOLOAD=1``): it is
not listed and asking for it is an ``UnknownBackendError`` that says autoloading is disabled.
"""

from __future__ import annotations

import sys

import torch

from loftr_attention import UnknownBackendError, available_backends, get_backend, get_spec
from loftr_attention.testing import run_conformance


def main(mode: str) -> int:
    names = list(available_backends())
    print(f"available attention backends: {names}")
    if mode == "present":
        spec = get_spec("key_blocked")
        print(f"key_blocked registered by: {spec.plugin}")
        if "loftr-attention-example-plugin" not in spec.plugin:
            print("FAIL: key_blocked does not come from the example distribution", file=sys.stderr)
            return 1
        report = run_conformance("key_blocked", dtypes=(torch.float32, torch.float64))
        print(report)
        q = torch.randn(2, 8, 300, 32)
        k, v = torch.randn(2, 8, 700, 32), torch.randn(2, 8, 700, 32)
        diff = get_backend("key_blocked", block_size=64)(q, k, v) - get_backend("full")(q, k, v)
        print(f"max |key_blocked - full| at L=300, S=700, 11 key blocks: {diff.abs().max():.2e}")
        return 0 if diff.abs().max() <= 1e-5 else 1
    if mode == "absent":
        if "key_blocked" in names:
            print("FAIL: key_blocked is listed although autoloading is disabled", file=sys.stderr)
            return 1
        try:
            get_backend("key_blocked")
        except UnknownBackendError as exc:
            print(f"as expected: {exc}")
            return 0
        print("FAIL: get_backend('key_blocked') did not raise", file=sys.stderr)
        return 1
    print(f"usage: {sys.argv[0]} present|absent", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
