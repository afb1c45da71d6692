#!/usr/bin/env python3
"""Clang's thread-safety analysis (-Wthread-safety) over the engine, the
model registry and the server: every source under runtime/ and server/ is
parsed by clang++ -fsyntax-only with the flags of the release build (its
compile_commands.json), and any thread-safety warning is an error. (kernels/
is left out: its thread pool shares work through atomics, its mutex only
puts workers to sleep, so there is nothing to annotate.) The classes carry Abseil's annotations
(ABSL_GUARDED_BY, ABSL_EXCLUSIVE_LOCKS_REQUIRED, ...) on absl::Mutex, which
Abseil annotates as a capability, so a guarded member touched without its
lock, or a *_LOCKS_REQUIRED function called without it, fails this check.

Syntax-only (no code generation) keeps it cheap (scripts/test.sh runs it
after the release build). No suppressions: nothing here is a library's
fault. A self-check first proves the flags catch an unguarded access.

  scripts/thread_safety.py [BUILD_DIR]   (default build/release; needs its
                                          generated protobuf headers)
"""
import concurrent.futures
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DIRS = ("runtime", "server")
CLANG = os.environ.get("CLANGXX", "clang++")
FLAGS = ["-fsyntax-only", "-Wno-everything", "-Wthread-safety", "-Wthread-safety-beta",
         "-Werror=thread-safety", "-Werror=thread-safety-beta"]


def clang_command(entry):
    args = shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])
    out, skip = [CLANG], False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a in ("-o", "-c"):
            skip = a == "-o"
            continue
        out.append(a)
    return out + FLAGS


def selected(entry):
    path = os.path.relpath(os.path.abspath(os.path.join(entry["directory"], entry["file"])), ROOT)
    return path.split(os.sep)[0] in DIRS and path.endswith(".cc") and "/tests/" not in path, path


SELF_CHECK = """
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
class Counter {
 public:
  void Bump() { ++n_; }  // Unguarded: must be refused.
 private:
  absl::Mutex mu_;
  int n_ ABSL_GUARDED_BY(mu_) = 0;
};
"""


def self_check():
    r = subprocess.run([CLANG, "-x", "c++", "-std=c++20", "-"] + FLAGS, input=SELF_CHECK,
                       capture_output=True, text=True)
    if r.returncode == 0 or "requires holding mutex" not in r.stderr:
        sys.exit(f"thread_safety: the flags do not catch an unguarded access:\n{r.stderr}")


def main():
    self_check()
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "release"))
    with open(os.path.join(build, "compile_commands.json")) as f:
        entries = json.load(f)
    jobs = []
    for e in entries:
        ok, path = selected(e)
        if ok:
            jobs.append((path, e))
    if not jobs:
        sys.exit(f"thread_safety: no runtime/server/kernels sources in {build}/compile_commands.json")
    t0 = time.time()

    def check(job):
        path, e = job
        r = subprocess.run(clang_command(e), cwd=e["directory"], capture_output=True, text=True)
        return path, r.returncode, r.stderr

    failed = []
    workers = int(os.environ.get("JOBS", os.cpu_count() or 2))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for path, rc, err in pool.map(check, sorted(jobs)):
            if rc != 0:
                failed.append(path)
                sys.stderr.write(err)
    print(f"thread_safety: {len(jobs)} files, {len(failed)} failed, {time.time() - t0:.0f} s")
    if failed:
        sys.exit("thread_safety: FAILED: " + " ".join(failed))


if __name__ == "__main__":
    main()
