"""Lambda archive size: Tandem's against a scikit-learn + joblib stack for the same runtime.

Both are built the same way (`deploy.bundle`: pip wheels for the Lambda platform and Python,
versions pinned to this environment, tests and type stubs stripped, deflated
deterministically), for python3.12 on arm64 (what the program deploys) and on x86_64:

- tandem: the handler's sources + numpy + onnxruntime (`build_lambda_zip`);
- scikit-learn + joblib: numpy + scipy + scikit-learn + joblib + threadpoolctl, what a
  pickle-serving Lambda needs before its own code;
- the same + pandas: what it needs to score the pipeline by column name, as Tandem's does.

Sizes are bytes on disk: unzipped is what Lambda's 250 MB limit counts. Budget: Tandem's
archive within 140 MB unzipped. The first run downloads the wheels (cached in build/wheels).
"""

from __future__ import annotations

import os
import tempfile
from importlib import metadata
from pathlib import Path

from deploy import bundle

ARCHES = ("arm64", "x86_64")
PYTHON = "3.12"
SKLEARN_STACK = ("numpy", "scipy", "scikit-learn", "joblib", "threadpoolctl")
MB = 1e6


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def peer_archive(packages: tuple[str, ...], arch: str, dest: Path) -> Path:
    """An archive of `packages` (pinned here) for the Lambda runtime, built like Tandem's."""
    pins = [f"{name}=={metadata.version(name)}" for name in packages]
    site = bundle.install_dependencies(python=PYTHON, arch=arch, requirements=pins)
    files = {
        p.relative_to(site).as_posix(): p
        for p in sorted(site.rglob("*"))
        if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
    }
    return bundle.write_deterministic_zip(dest, files)


def line(title: str, report: dict, tandem: dict | None = None) -> str:
    unzipped, zipped = report["unzipped_bytes"], report["zipped_bytes"]
    ratio = f"   {unzipped / tandem['unzipped_bytes']:5.2f}x tandem" if tandem else ""
    return f"  {title:34s} {unzipped / MB:7.1f} MB unzipped {zipped / MB:6.1f} MB zipped{ratio}"


def main() -> None:
    print(f"Lambda archive size, python{PYTHON}; {load()}")
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ARCHES:
            out = Path(tmp) / arch
            tandem = bundle.bundle_report(bundle.build_lambda_zip(out, arch=arch, python=PYTHON))
            peer = bundle.bundle_report(peer_archive(SKLEARN_STACK, arch, out / "sk.zip"))
            pandas = bundle.bundle_report(
                peer_archive((*SKLEARN_STACK, "pandas"), arch, out / "skpd.zip")
            )
            print(f"\n{arch}:")
            print(line("tandem (numpy + onnxruntime)", tandem))
            print(line("scikit-learn + joblib", peer, tandem))
            print(line("scikit-learn + joblib + pandas", pandas, tandem))
            largest = ", ".join(
                f"{p['name']} {p['unzipped_bytes'] / MB:.1f} MB" for p in tandem["top"][:4]
            )
            print(f"  tandem's largest parts: {largest}")
            within = tandem["unzipped_bytes"] <= bundle.UNZIPPED_BUDGET
            verdicts.append(within)
            print(
                f"  tandem {tandem['unzipped_bytes'] / MB:.1f} MB unzipped against the "
                f"{bundle.UNZIPPED_BUDGET / MB:.0f} MB budget (Lambda allows "
                f"{bundle.LAMBDA_UNZIPPED_LIMIT / MB:.0f} MB): "
                f"{'within budget' if within else 'OVER BUDGET'}; zipped "
                f"{tandem['zipped_bytes'] / MB:.1f} MB "
                + (
                    "fits a direct upload"
                    if tandem["zipped_bytes"] <= bundle.LAMBDA_DIRECT_UPLOAD_LIMIT
                    else "goes through S3 (over the 50 MB direct upload)"
                )
            )
    print(f"\n{load()}")
    print("budget met on both architectures" if all(verdicts) else "budget NOT met")


if __name__ == "__main__":
    main()
