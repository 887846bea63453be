"""Run the q01 acceptance suite once in this fresh interpreter and print its timings as JSON.

Started by ``sim.suite_timing`` as ``python -I suite_child.py '<json>'``; imports nothing from ``sim``
so that the interpreter pays exactly the imports the configuration names.
"""
import json
import statistics
import sys
import time

entered = time.perf_counter()
args = json.loads(sys.argv[1])
sys.path[:0] = [args["tree"], args["suite_dir"]]
import acceptance  # noqa: E402  (imports nothing itself)

space = {"WORKDIR": args["workdir"]}
t0 = time.perf_counter()
exec(args["imports"], space)
import_s = time.perf_counter() - t0
make = eval(args["make"], space)

t0 = time.perf_counter()
shared = make(acceptance.ROWS)
setup_s = time.perf_counter() - t0
per_check = {"shared": [], "per_test": []}
for scope, rounds in (("shared", args["rounds"] * 3), ("per_test", args["rounds"])):
    for _ in range(rounds):
        for check in acceptance.CHECKS:
            t0 = time.perf_counter()
            check(shared if scope == "shared" else make(acceptance.ROWS))
            per_check[scope].append(time.perf_counter() - t0)
failures = acceptance.run(make, "shared") + acceptance.run(make, "per_test")
n = len(acceptance.CHECKS)
out = {"import_s": import_s, "setup_s": setup_s, "checks": n, "failures": failures,
       # per test: the mean over the suite's checks of each check's median time
       "t_shared_s": statistics.fmean(statistics.median(per_check["shared"][k::n]) for k in range(n)),
       "t_per_test_s": statistics.fmean(statistics.median(per_check["per_test"][k::n]) for k in range(n)),
       "inside_s": time.perf_counter() - entered}
print(json.dumps(out))
