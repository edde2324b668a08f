"""Hatch build hook: compile the optional C fast paths (dotaudit/capture/_scan.c, the record
scanner, and dotaudit/dns/_wire.c, the DNS wire walker) into one library.

It is loaded with ctypes, so it needs a C compiler but no Python headers.  Without a compiler
the wheel is built without it and dotaudit runs its pure-Python path (same results, slower).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = (Path("dotaudit/capture/_scan.c"), Path("dotaudit/dns/_wire.c"))
TARGET = Path("dotaudit/capture/_dotaudit_scan.so")
CFLAGS = ["-O2", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math"]


class ScannerBuildHook(BuildHookInterface):
    PLUGIN_NAME = "dotaudit-scanner"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        srcs, out = [root / s for s in SOURCES], root / TARGET
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if not cc or not all(s.exists() for s in srcs):
            print("dotaudit: no C compiler; the pure-Python reader will be used", file=sys.stderr)
            return
        r = subprocess.run([cc, *CFLAGS, "-o", str(out), *map(str, srcs)], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"dotaudit: compiling the C scanner failed; the pure-Python reader will be used\n{r.stderr}",
                  file=sys.stderr)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(out)] = str(TARGET)
