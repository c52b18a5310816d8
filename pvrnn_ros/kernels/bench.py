"""ER tick latency and training speed, per backend, measured side by side in one process.

Used by `pvrnn-ros bench` and `bench/er_latency.py`. Random weights (no training needed): the
cost of a tick does not depend on the weight values. Single torch thread for fairness.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from pvrnn_ros.core.config import Config, LayerConfig, ModelConfig
from pvrnn_ros.core.window import AdamState, WindowProblem
from pvrnn_ros.core.model import FlatWeights, PVRNN

NRL_BINS = [31, 14, 31, 16, 31, 20, 31, 14, 31, 16, 31, 20, 15, 7, 17, 8]  # 333 output units


@dataclass
class Scenario:
    key: str
    title: str
    model_cfg: ModelConfig
    n_joints: int
    W: int
    K: int
    B: int = 1
    reference: bool = True  # time the autograd reference too (off where one call takes minutes)


def scenarios() -> list[Scenario]:
    nrl = ModelConfig(layers=[LayerConfig(d=40, z=4, tau=2.0), LayerConfig(d=10, z=1, tau=10.0)],
                      output="softmax", softmax_bins=list(NRL_BINS))
    default = Config().model
    tglean = ModelConfig(layers=[LayerConfig(d=60, z=6, tau=2.0), LayerConfig(d=40, z=4, tau=4.0),
                                 LayerConfig(d=20, z=2, tau=8.0)], output="softmax", softmax_bins=10)
    return [
        Scenario("a", "NRL-like d=(40,10) z=(4,1) 16 joints softmax(333) W=15 K=15", nrl, 16, 15, 15),
        Scenario("b", "default config, 7 joints, W=15 K=15", default, 7, 15, 15),
        Scenario("c", "default config, 7 joints, W=50 K=50", default, 7, 50, 50),
        Scenario("d", "default config, 7 joints, W=50 K=50, B=64 windows", default, 7, 50, 50, 64),
        # planning (core.plan): a T-GLean-size network, its 70-step window, K Adam steps, B candidates
        Scenario("g", "plan: T-GLean-size d=(60,40,20) z=(6,4,2) 5x10 softmax, W=70 K=100 B=1", tglean, 5, 70, 100),
        Scenario("h", "plan: T-GLean-size, W=70 K=500 B=1", tglean, 5, 70, 500, 1, False),
        Scenario("i", "plan: T-GLean-size, W=70 K=100 B=16 candidates", tglean, 5, 70, 100, 16, False),
        Scenario("j", "plan: T-GLean-size, W=70 K=500 B=16 candidates", tglean, 5, 70, 500, 16, False),
    ]


def make_problem(sc: Scenario, seed: int = 0, sample_posterior: bool = False):
    """A random model and one tick's problem (not at the stream start)."""
    torch.manual_seed(seed)
    model = PVRNN(sc.model_cfg, sc.n_joints)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p.shape[-1] if p.dim() > 1 else 4
            p.copy_(torch.randn_like(p) / fan_in**0.5)
        fw = FlatWeights(*[None if t is None else t.detach() for t in model.flat()])
    g = torch.Generator().manual_seed(seed + 1)
    B, W, Z, D = sc.B, sc.W, model.z_total, sc.n_joints
    h0 = torch.randn(B, model.d_total, generator=g) * 0.5
    x = torch.rand(B, W, D, generator=g) * 1.6 - 0.8
    eps = torch.randn(sc.K, B, W, Z, generator=g) if sample_posterior else None
    problem = WindowProblem(model=model, fw=fw, h0=h0, d0=torch.tanh(h0), target=model.coding.target(x),
                            joint_mask=torch.ones(B, W, D), kl_w=model.kl_w, kl_w1=model.kl_w1,
                            first_is_unit_prior=False, eps=eps, lr=0.1, iterations=sc.K)
    a_mu = torch.randn(B, W, Z, generator=g) * 0.3
    a_ls = torch.randn(B, W, Z, generator=g) * 0.3 - 1.0
    return problem, a_mu, a_ls, AdamState.zeros_like(a_mu)


def _time_batched(backend, big, one, rounds: int, per_round: int, budget_s: float):
    """Ticks of the B-window problem `big` and its B = 1 counterpart `one`, interleaved in rounds
    (per_round calls of each): (big times, one times, per-round ratios of the medians)."""
    backend.regress(*big)
    for _ in range(3):
        backend.regress(*one)
    t_big, t_one, ratios = [], [], []
    start = time.perf_counter()
    for r in range(rounds):
        rb, ro = [], []
        for _ in range(per_round):
            t0 = time.perf_counter()
            backend.regress(*big)
            rb.append((time.perf_counter() - t0) * 1e3)
            for _ in range(3):  # the B = 1 tick is short: three per big one, for a steadier median
                t0 = time.perf_counter()
                backend.regress(*one)
                ro.append((time.perf_counter() - t0) * 1e3)
        t_big += rb
        t_one += ro
        ratios.append(statistics.median(rb) / statistics.median(ro))
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
    return t_big, t_one, ratios


def _time_ticks(backend, problem, a_mu, a_ls, adam, repeats: int, warmup: int, budget_s: float) -> list[float]:
    for _ in range(warmup):
        backend.regress(problem, a_mu, a_ls, adam)
    times = []
    start = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        backend.regress(problem, a_mu, a_ls, adam)
        times.append((time.perf_counter() - t0) * 1e3)
        if i >= 2 and time.perf_counter() - start > budget_s:
            break
    return times


@dataclass
class Row:
    scenario: str
    title: str
    backend: str
    median_ms: float
    p90_ms: float
    n: int
    speedup: float | None = None
    # batched cases (B > 1): the same problem at B = 1 timed interleaved with it, so the ratio is
    # side by side (the machine's load changes between cases)
    batch: int = 1
    b1_median_ms: float | None = None
    ratio_vs_b1: float | None = None  # median over rounds of (B-window tick / B = 1 tick)
    per_window_ms: float | None = None


@dataclass
class BenchResult:
    rows: list[Row] = field(default_factory=list)
    compile_s: dict[str, float] = field(default_factory=dict)
    training: dict[str, float] = field(default_factory=dict)
    machine: str = ""


def _backends(names: list[str] | None):
    from pvrnn_ros.kernels import available_backends, get_backend

    avail = available_backends()
    names = names or avail
    out = []
    for n in names:
        if n not in avail:
            print(f"  (backend {n} not available here: skipped)")
            continue
        out.append((n, get_backend(n)))
    if "reference" not in [n for n, _ in out]:
        out.insert(0, ("reference", get_backend("reference")))
    return out


def run_bench(quick: bool = False, backends: list[str] | None = None, only: str = "abcdefkl",
              train_fast: bool = True, log=print) -> BenchResult:
    torch.set_num_threads(1)
    res = BenchResult(machine=f"{platform.processor() or platform.machine()}, {_cpu_count()} CPU cores, "
                              f"{cpu_identity()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread"
                              + _numba_threads())
    bks = _backends(backends)
    # JIT compile (or on-disk cache load), reported separately and excluded from the timings
    for name, _ in bks:
        if name == "cpu":
            from pvrnn_ros.kernels import cpu

            res.compile_s["cpu"] = cpu.warmup()
            log(f"cpu backend JIT warm-up (compile or cache load): {res.compile_s['cpu']:.2f} s")
    # numba's threaded driver starts the OpenMP runtime torch shares, which resets torch's
    # intra-op threads to the core count: back to one (else the reference runs 2 threads)
    torch.set_num_threads(1)
    for sc in scenarios():
        if sc.key not in only:
            continue
        problem, a_mu, a_ls, adam = make_problem(sc)
        ref_median = None
        for name, bk in bks:
            slow = name == "reference"
            if slow and not sc.reference:
                continue
            big = sc.W * sc.K * sc.B
            if slow:
                repeats = 3 if big > 10000 else (5 if quick else 20)
                budget = 20.0 if quick else 60.0
                warm = 1
            else:
                repeats = 20 if quick else 200
                budget = 5.0 if quick else 20.0
                warm = 3
            if quick and slow and sc.B > 1:
                repeats = 2
            variants = [(name, bk)]
            if name == "cpu" and sc.B > 1:  # the batched path on one thread too
                from pvrnn_ros.kernels.cpu import CpuBackend

                variants.append(("cpu_1t", CpuBackend(parallel=False)))
            for label, backend in variants:
                one = None
                if sc.B > 1 and not slow:
                    one = make_problem(replace(sc, B=1))
                    rounds = 3 if quick else 7
                    per_round = max(1, min(10, int(2000 / max(1, big // 1000))))
                    ts, ts1, ratios = _time_batched(backend, (problem, a_mu, a_ls, adam), one, rounds,
                                                    2 if quick else per_round, budget)
                else:
                    ts = _time_ticks(backend, problem, a_mu, a_ls, adam, repeats, warm, budget)
                med, p90 = statistics.median(ts), float(np.percentile(ts, 90))
                row = Row(sc.key, sc.title, label, med, p90, len(ts), batch=sc.B)
                if one is not None:
                    row.b1_median_ms = statistics.median(ts1)
                    row.ratio_vs_b1 = statistics.median(ratios)
                    row.per_window_ms = med / sc.B
                if slow:
                    ref_median = med
                elif ref_median:
                    row.speedup = ref_median / med
                res.rows.append(row)
                log(_fmt_row(row))
    if any(k in only for k in "fkl"):
        res.rows.extend(bench_engine(bks, quick, log, only))
    if "e" in only:
        res.training = bench_training(quick, train_fast, log)
    return res


def _synthetic_demos(cfg: Config, n: int = 12, steps: int = 160, joints: int = 7):
    """n smooth sequences of `joints` joints (sines, a little noise) at the config's rate."""
    from pvrnn_ros.core.data import Demonstration

    rng = np.random.default_rng(0)
    demos = []
    for i in range(n):
        t = np.arange(steps) / cfg.data.rate_hz
        pos = np.stack([np.sin(0.5 * t * (1 + 0.1 * j) + i) for j in range(joints)], axis=1)
        pos = pos + 0.01 * rng.standard_normal(pos.shape)
        demos.append(Demonstration(f"seq{i}", t, pos, [f"j{j}" for j in range(joints)]))
    return demos


@dataclass
class EngineScenario:
    key: str
    title: str
    cfg: Config
    n_joints: int
    reference: bool = True


def engine_scenarios() -> list[EngineScenario]:
    """(f) the default config's tick as a node runs it; (k), (l) the NRL-like network of (a) as a
    whole engine tick (NRL's e_postdict setting: lr 0.1, meta-prior 0.025, the mean path) at
    W = K = 15 and 50."""
    out = [EngineScenario("f", "", Config(), 7)]
    for key, wk in (("k", 15), ("l", 50)):
        c = Config()
        c.model = scenarios()[0].model_cfg
        c.er.window = c.er.iterations = wk
        c.er.first_iterations = wk
        c.er.lr, c.er.meta_prior, c.er.samples, c.er.horizon = 0.1, [0.025, 0.025], 0, 10
        out.append(EngineScenario(key, f"ER engine tick (ErrorRegression.step), NRL-like net of (a), W=K={wk}, "
                                       f"lr 0.1, meta-prior 0.025, mean path x {c.er.horizon} steps", c, 16,
                                  reference=wk <= 15))
    cfg = out[0].cfg
    out[0].title = (f"ER engine tick (ErrorRegression.step), default config, W={cfg.er.window} "
                    f"K={cfg.er.iterations}, {cfg.er.samples} rollouts x {cfg.er.horizon} steps")
    return out


def bench_engine(bks, quick: bool, log=print, only: str = "fkl") -> list[Row]:
    """Whole ER ticks a node runs, `ErrorRegression.step` (the K iterations plus everything
    around them: coding, sliding the window, the last window pass, the rollouts, decoding), per
    backend. The cpu backend twice, interleaved tick by tick on the same stream: `cpu` runs each
    tick as one compiled call on the window it keeps (`kernels.cpu_stream`), `cpu_generic` builds
    a `WindowProblem` per tick and calls regress and window_pass."""
    from pvrnn_ros.core.er import ErrorRegression
    from pvrnn_ros.core.train import build_model

    rows = []
    for sc in engine_scenarios():
        if sc.key not in only:
            continue
        cfg = sc.cfg
        demos = _synthetic_demos(cfg, n=1, steps=400, joints=sc.n_joints)
        trained = build_model(cfg, demos)
        stream = demos[0].positions
        engines = []
        for name, bk in bks:
            if name == "reference" and not sc.reference:
                continue
            engines.append((name, ErrorRegression(trained, backend=bk)))
            if name == "cpu":
                engines.append(("cpu_generic", ErrorRegression(trained, backend=bk, compiled_tick=False)))
        warm = cfg.er.window + 2  # fill the window (and the first tick's longer K) before timing
        times: dict[str, list[float]] = {name: [] for name, _ in engines}
        for name, er in engines:
            if name == "reference":  # alone: it is slow, and its figure only sets the speed-up
                n = 10 if quick else 40
                for i in range(warm + n):
                    t0 = time.perf_counter()
                    er.step(stream[i % len(stream)])
                    if i >= warm:
                        times[name].append((time.perf_counter() - t0) * 1e3)
        fast = [(name, er) for name, er in engines if name != "reference"]
        n = 40 if quick else 300
        for i in range(warm + n):  # the fast engines tick by tick in turn: side by side
            obs = stream[i % len(stream)]
            for name, er in fast:
                t0 = time.perf_counter()
                er.step(obs)
                if i >= warm:
                    times[name].append((time.perf_counter() - t0) * 1e3)
        ref_median = statistics.median(times["reference"]) if times.get("reference") else None
        for name, _ in engines:
            ts = times[name]
            row = Row(sc.key, sc.title, name, statistics.median(ts), float(np.percentile(ts, 90)), len(ts))
            if name != "reference" and ref_median:
                row.speedup = ref_median / row.median_ms
            rows.append(row)
            log(_fmt_row(row))
    return rows


def bench_training(quick: bool, fast: bool, log=print) -> dict[str, float]:
    """Training epochs/s, default config, 12 sequences x 160 steps, measured side by side:
    interleaved rounds on identical models, epochs/s per round, medians. Variants: the autograd
    reference trainer on 1 torch thread and on every core; with numba the fused CPU path
    (`train.backend: cpu`) on 1 thread and (cpu_threads) on every core. Each cpu variant's
    speed-up is the median over rounds of its rate over the faster reference variant of that
    round (robust to load changes on a shared machine)."""
    import copy

    from pvrnn_ros.core.train import Trainer, build_model

    cfg = Config()
    demos = _synthetic_demos(cfg)
    cores = _cpu_count()
    variants = [("reference", "reference", 1, 1)]  # (label, backend, torch threads, cpu_threads)
    if cores > 1:
        variants.append((f"reference_{cores}t", "reference", cores, 1))
    if fast:
        try:
            from pvrnn_ros.kernels import cpu_train

            cpu_train.warmup()  # JIT compile or cache load, excluded
            variants.append(("cpu", "cpu", 1, 1))
            if cores > 1:
                variants.append((f"cpu_{cores}t", "cpu", 1, cores))
        except ImportError:
            log("  (numba not available: fused CPU training path skipped)")
    trainers = {}
    for label, backend, torch_threads, cpu_threads in variants:
        c = copy.deepcopy(cfg)
        c.train.backend = backend
        c.train.cpu_threads = cpu_threads
        torch.set_num_threads(torch_threads)
        trainers[label] = Trainer(build_model(c, demos))
        for _ in range(2 if backend == "reference" else 5):  # warm-up
            trainers[label].epoch()
    rounds = 3 if quick else 7
    per_round = {"reference": 2 if quick else 5, "cpu": 20 if quick else 50}
    rates: dict[str, list[float]] = {v[0]: [] for v in variants}
    for _ in range(rounds):
        for label, backend, torch_threads, _ in variants:
            torch.set_num_threads(torch_threads)
            n = per_round[backend]
            t0 = time.perf_counter()
            for _ in range(n):
                trainers[label].epoch()
            rates[label].append(n / (time.perf_counter() - t0))
    torch.set_num_threads(1)
    out = {f"{label}_epochs_per_s": statistics.median(r) for label, r in rates.items()}
    refs = [label for label, backend, *_ in variants if backend == "reference"]
    best_ref = [max(rates[label][i] for label in refs) for i in range(rounds)]
    parts = [f"{label} {out[label + '_epochs_per_s']:.2f}" for label in refs]
    for label, backend, *_ in variants:
        if backend != "cpu":
            continue
        ratios = [c / r for c, r in zip(rates[label], best_ref)]
        out[f"{label}_speedup"] = statistics.median(ratios)
        parts.append(f"{label} {out[label + '_epochs_per_s']:.2f} ({out[label + '_speedup']:.1f}x, "
                     f"per round {min(ratios):.1f}-{max(ratios):.1f}x)")
    log(f"(e) training epochs/s, default config, 12 seq x 160 steps, {rounds} interleaved rounds: "
        + ", ".join(parts) + "  [speed-up over the faster reference]")
    return out


def _numba_threads() -> str:
    try:
        import numba

        return f", {numba.get_num_threads()} numba threads (cpu: B > 1 windows threaded, cpu_1t: one thread)"
    except ImportError:
        return ""


def cpu_identity() -> str:
    """The CPU as the kernels see it: its model name, the host CPU LLVM compiles for (znver3 and
    znver4 both read "AMD EPYC" in lscpu, but only znver4 has AVX-512) and the widest vector ISA.
    Figures from different hosts are not comparable, and this is how to tell them apart."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    try:
        from pvrnn_ros.kernels.cpu import host_cpu
    except ImportError:  # no numba: the model name is all there is
        return model
    host, isa = host_cpu()
    return f"{model} (LLVM host {host}, {isa})"


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _batched_note(r: Row) -> str:
    if r.ratio_vs_b1 is None:
        return ""
    return (f"  B={r.batch}: {r.per_window_ms:.3f} ms per window, {r.ratio_vs_b1:.1f}x the B=1 tick "
            f"({r.b1_median_ms:.3f} ms, interleaved)")


def _fmt_row(r: Row) -> str:
    sp = f"{r.speedup:8.1f}x" if r.speedup else "        -"
    return (f"({r.scenario}) {r.backend:10s} median {r.median_ms:10.3f} ms  p90 {r.p90_ms:10.3f} ms  n={r.n:<4d} "
            f"speed-up {sp}" + _batched_note(r))


def format_table(res: BenchResult) -> str:
    lines = [f"machine: {res.machine}"]
    for k, v in res.compile_s.items():
        lines.append(f"{k} JIT warm-up: {v:.2f} s (excluded from timings)")
    lines.append(f"{'case':4s} {'backend':10s} {'median ms':>10s} {'p90 ms':>10s} {'n':>4s} {'speed-up':>9s}  scenario")
    for r in res.rows:
        sp = f"{r.speedup:8.1f}x" if r.speedup else "        -"
        lines.append(f"({r.scenario})  {r.backend:10s} {r.median_ms:10.3f} {r.p90_ms:10.3f} {r.n:4d} {sp}  {r.title}")
        if r.ratio_vs_b1 is not None:
            lines.append(f"{'':26s}{_batched_note(r).strip()}")
    tr = res.training
    if tr:
        lines.append("(e)  training epochs/s (default config, 12 seq x 160 steps; _Nt = N threads; speed-up over "
                     "the faster reference)")
        for key, rate in tr.items():
            if key.endswith("_epochs_per_s"):
                label = key[:-len("_epochs_per_s")]
                sp = tr.get(f"{label}_speedup")
                lines.append(f"     {label:12s} {rate:10.2f}" + (f" {sp:8.1f}x" if sp else ""))
    return "\n".join(lines)


def to_json(res: BenchResult, path: str) -> None:
    data = {
        "machine": res.machine,
        "compile_s": res.compile_s,
        "rows": [r.__dict__ for r in res.rows],
        "training": res.training,
    }
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
