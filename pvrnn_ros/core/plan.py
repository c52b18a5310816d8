"""Goal-directed planning by active inference (GLean / T-GLean, DESIGN.md section 7).

The same window problem as error regression, reaching H steps past now: the observed past
(the last steps of `history`, reconstruction as in ER) followed by a future whose only targets are
the goal, a mask over steps x modality dimensions. Adam on the window's A (weights frozen)
minimises the free energy
    F = evidence (past reconstruction + KL over the past) + goal (goal error + KL over the future)
for B candidate plans at once (different initial A), batched in the backends; the candidate with
the lowest goal part wins. The plan is the posterior trajectory over the future, decoded into every
modality.

    planner = Planner(trained, PlanConfig(horizon=30))
    plan = planner.plan(history_joints, [GoalTerm("end_effector", values=[0.3, 0.1, 0.5], tolerance=0.03)])
    plan.positions            # [H, J] joint positions, raw units
    plan.modalities["end_effector"], plan.free_energy, plan.reached
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .checkpoint import TrainedModel
from .config import PlanConfig
from .model import FlatWeights, free_energy, kl_diag_gauss
from .window import AdamState, WindowProblem


class GoalError(ValueError):
    """A goal names something the model does not have, or holds an invalid value."""


@dataclass
class GoalTerm:
    """One part of a goal: values of one modality (or `joints`) to reach.

    modality: "joints" or a modality of the model; components: which joints / components (None =
    all of them, in the model's order); values: one per component (a class name for a categorical
    modality); from_step: hold from this future step (0-based) to the end, None = the final step
    only; tolerance: reached when the plan's error is within it (raw units; for a categorical goal,
    the probability of the goal class must be at least 1 - tolerance)."""

    modality: str
    values: list
    components: list[str] | None = None
    from_step: int | None = None
    tolerance: float = 0.05

    @classmethod
    def parse(cls, text: str) -> "GoalTerm":
        """`end_effector=0.3,0.1,0.5`, `joints.elbow=1.2`, `joints=0,0.4,...`, `task=wave`; add `@K`
        to hold from future step K, `~TOL` for the tolerance: `joints.elbow=1.2@20~0.02`."""
        if "=" not in text:
            raise GoalError(f"goal {text!r} is invalid: expected NAME=VALUES, e.g. end_effector=0.3,0.1,0.5 "
                            f"or joints.elbow=1.2 or task=wave")
        name, rest = text.split("=", 1)
        tol = 0.05
        if "~" in rest:
            rest, t = rest.rsplit("~", 1)
            tol = _number(t, text)
        from_step = None
        if "@" in rest:
            rest, k = rest.rsplit("@", 1)
            if not k.strip().isdigit():
                raise GoalError(f"goal {text!r}: '@{k}' is invalid: expected @STEP, a future step >= 0")
            from_step = int(k)
        modality, _, component = name.strip().partition(".")
        values = [v.strip() for v in rest.split(",")]
        if not values or values == [""]:
            raise GoalError(f"goal {text!r} has no values")
        return cls(modality, values, [component] if component else None, from_step, tol)


def _number(v, where: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise GoalError(f"goal {where!r}: {v!r} is not a number") from None
    if not math.isfinite(x):
        raise GoalError(f"goal {where!r}: {v!r} is not finite")
    return x


@dataclass
class Plan:
    times: np.ndarray  # [H] seconds after the last observation
    joint_names: list[str]
    positions: np.ndarray  # [H, J] the chosen plan, raw units
    modalities: dict[str, np.ndarray]  # name -> [H, k] raw values, or [H, C] class probabilities
    free_energy: dict[str, float]  # evidence, goal, total of the chosen plan
    chosen: int  # index of the chosen candidate
    candidates: dict[str, np.ndarray]  # positions [B, H, J], evidence [B], goal [B], total [B]
    losses: np.ndarray  # [K, B] window free energy at each iteration
    iterations: int
    goal_errors: list[float]  # per goal term, raw units (categorical: 1 - probability of the class)
    reached: list[bool]  # per goal term, within its tolerance
    past: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [n, J] the observed steps used


class Planner:
    """Plans with a trained model; `plan(history, goal)` is one call (see module docstring)."""

    def __init__(self, trained: TrainedModel, config: PlanConfig | None = None, backend=None, past: int = 10):
        from pvrnn_ros.kernels import get_backend

        self.trained = trained
        self.cfg = copy.deepcopy(config or trained.config.plan)
        self.cfg.validate("plan", n_layers=len(trained.model.z_sizes))
        self.model = trained.model
        self.layout = trained.layout
        self.past = int(past)
        self.backend = backend if backend is not None else get_backend(self.cfg.backend, trained.model)
        with torch.no_grad():
            self.fw = FlatWeights(*[None if t is None else t.detach() for t in self.model.flat()])
        meta = self.cfg.meta_prior or [layer.w for layer in trained.config.model.layers]
        self.kl_w, self.kl_w1 = self.model.kl_weights(meta)
        self.dim_weights = torch.as_tensor(self.layout.dim_weights(), dtype=torch.float32, device=trained.device)

    # ------------------------------------------------------------------------------------ goals
    def goal_arrays(self, goal: list[GoalTerm], H: int) -> tuple[np.ndarray, np.ndarray]:
        """(normalised target [H, D], 1 where the goal constrains [H, D]) for the future steps."""
        D = self.layout.n_dims
        target, where = np.zeros((H, D)), np.zeros((H, D))
        if not goal:
            raise GoalError("the goal is empty: give at least one term (e.g. end_effector=x,y,z)")
        for term in goal:
            cols, values = self._term_columns(term)
            if term.from_step is not None and not 0 <= term.from_step < H:
                raise GoalError(f"goal on {term.modality}: from step {term.from_step} is outside the plan "
                                f"(future steps 0..{H - 1})")
            steps = slice(H - 1, H) if term.from_step is None else slice(term.from_step, H)
            target[steps, cols] = values
            where[steps, cols] = 1.0
        return target, where

    def _term_columns(self, term: GoalTerm) -> tuple[list[int], np.ndarray]:
        lay = self.layout
        if term.modality == "joints":
            names = self.trained.joint_names
            comps = term.components or names
            unknown = [c for c in comps if c not in names]
            if unknown:
                raise GoalError(f"goal on joint {unknown[0]!r}: the model's joints are {', '.join(names)}")
            raw = self._values(term, len(comps))
            idx = [names.index(c) for c in comps]
            full = np.zeros(len(names))
            full[idx] = raw
            norm = self.trained.normalizer.normalize(full)[idx]
            self._check_region(term, comps, norm, self.trained.normalizer, idx)
            return idx, norm
        if term.modality not in lay.names:
            raise GoalError(f"goal on {term.modality!r}: the model has no such modality (it has "
                            f"{', '.join(['joints'] + lay.names)})")
        mod = lay.get(term.modality)
        sl = lay.slice(mod.name)
        if mod.kind == "categorical":
            if len(term.values) != 1 or term.values[0] not in mod.components:
                raise GoalError(f"goal {mod.name}={','.join(map(str, term.values))}: expected one of the classes "
                                f"{', '.join(mod.components)}")
            return [sl.start], np.asarray([float(mod.components.index(term.values[0]))])
        comps = term.components or mod.components
        unknown = [c for c in comps if c not in mod.components]
        if unknown:
            raise GoalError(f"goal on {mod.name}.{unknown[0]}: its components are {', '.join(mod.components)}")
        raw = self._values(term, len(comps))
        idx = [mod.components.index(c) for c in comps]
        full = np.zeros(len(mod.components))
        full[idx] = raw
        norm = mod.normalizer.normalize(full)[idx]
        self._check_region(term, comps, norm, mod.normalizer, idx)
        return [sl.start + i for i in idx], norm

    @staticmethod
    def _values(term: GoalTerm, n: int) -> np.ndarray:
        if len(term.values) != n:
            raise GoalError(f"goal on {term.modality}: {len(term.values)} values for {n} components")
        return np.asarray([_number(v, f"{term.modality}={','.join(map(str, term.values))}") for v in term.values])

    @staticmethod
    def _check_region(term, comps, norm, normalizer, idx) -> None:
        # the trained range maps to [-scale, scale]; far beyond it tanh outputs cannot go
        far = np.flatnonzero(np.abs(norm) > 0.98)
        if far.size:
            i = int(far[0])
            lo, hi = normalizer.lo[idx[i]], normalizer.hi[idx[i]]
            raise GoalError(f"goal {term.modality}.{comps[i]} = {term.values[i]} is far outside the trained region "
                            f"({lo:.3g} .. {hi:.3g}): the model cannot produce it")

    # ------------------------------------------------------------------------------------ plan
    @torch.no_grad()
    def plan(self, history: np.ndarray, goal: list[GoalTerm], history_modalities: dict | None = None,
             warm_start: tuple[torch.Tensor, torch.Tensor] | None = None) -> Plan:
        """history: [n, J] joints observed so far (raw units, NaN = missing; at least one step);
        history_modalities: name -> [n, k] values or n class names, observed with them."""
        cfg, model, lay = self.cfg, self.model, self.layout
        history = np.asarray(history, dtype=np.float64)
        if history.ndim == 1:
            history = history[None]
        J = self.layout.n_joints
        if history.ndim != 2 or history.shape[1] != J or history.shape[0] < 1:
            raise GoalError(f"history has shape {history.shape}, expected [steps >= 1, {J}] "
                            f"(joints {self.trained.joint_names})")
        n = min(self.past, history.shape[0])
        past = history[-n:]
        H = cfg.horizon
        W = n + H
        dev = self.trained.device
        finite = np.isfinite(past)
        past_norm = np.where(finite, self.trained.normalizer.normalize(np.where(finite, past, 0.0)), 0.0)
        values = {k: (v[-n:] if isinstance(v, list) else np.asarray(v, dtype=np.float64)[-n:])
                  for k, v in (history_modalities or {}).items()}
        extra, seen = lay.encode(values, n)
        goal_target, goal_where = self.goal_arrays(goal, H)
        x = np.concatenate([np.concatenate([past_norm, extra], 1), goal_target], 0)  # [W, D]
        evidence = np.concatenate([np.concatenate([finite, seen], 1), np.zeros_like(goal_target)], 0)
        goal_mask = np.concatenate([np.zeros((n, lay.n_dims)), goal_where], 0)
        B = cfg.candidates
        xt = torch.as_tensor(x, dtype=torch.float32, device=dev)
        w = self.dim_weights
        ev_mask = torch.as_tensor(evidence, dtype=torch.float32, device=dev) * w
        goal_m = torch.as_tensor(goal_mask, dtype=torch.float32, device=dev) * w * cfg.goal_weight
        target = model.coding.target(xt[None])  # [1, W, D] or coded [1, W, D, K]
        target = target.expand(B, *target.shape[1:]).contiguous()
        mask = (ev_mask + goal_m)[None].expand(B, -1, -1).contiguous()
        Z = model.z_total
        gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        a_mu = torch.randn(B, W, Z, generator=gen, device=dev) * cfg.init_spread
        a_ls = torch.zeros(B, W, Z, device=dev)
        a_mu[0] = 0.0
        if warm_start is not None:
            a_mu[0], a_ls[0] = warm_start[0][-W:].to(dev), warm_start[1][-W:].to(dev)
        st = model.zero_state(B)
        problem = WindowProblem(model=model, fw=self.fw, h0=st.h, d0=st.d, target=target, joint_mask=mask,
                                kl_w=self.kl_w, kl_w1=self.kl_w1, first_is_unit_prior=True, eps=None,
                                lr=cfg.lr, iterations=cfg.iterations)
        if cfg.iterations > 0:
            result = self.backend.regress(problem, a_mu, a_ls, AdamState.zeros_like(a_mu))
            a_mu, a_ls, losses = result.a_mu, result.a_ls, result.losses.cpu().numpy()
        else:
            losses = np.zeros((0, B))
        self.last_a = (a_mu, a_ls)
        parts = self._parts(problem, a_mu, a_ls, ev_mask, goal_m, n)
        chosen = int(torch.argmin(parts["goal"]).item())
        out = model.posterior_forward(a_mu, a_ls, None, st, True, fw=self.fw)
        decoded = model.coding.decode(out.raw)  # [B, W, D]
        positions = self.trained.normalizer.denormalize(decoded[:, n:, :J].cpu().double().numpy())  # [B, H, J]
        mods = {}
        for mod in lay.modalities:
            sl = lay.slice(mod.name)
            if mod.kind == "categorical":
                mods[mod.name] = model.coding.probabilities(out.raw[chosen, n:], sl.start).cpu().double().numpy()
            else:
                mods[mod.name] = mod.normalizer.denormalize(decoded[chosen, n:, sl].cpu().double().numpy())
        errors, reached = self._goal_errors(goal, positions[chosen], mods, H)
        fe = {k: float(v[chosen]) for k, v in parts.items()}
        return Plan(times=np.arange(1, H + 1) / self.trained.rate_hz, joint_names=list(self.trained.joint_names),
                    positions=positions[chosen], modalities=mods, free_energy=fe, chosen=chosen,
                    candidates={"positions": positions, **{k: v.cpu().double().numpy() for k, v in parts.items()}},
                    losses=losses, iterations=cfg.iterations, goal_errors=errors, reached=reached, past=past)

    def _parts(self, problem, a_mu, a_ls, ev_mask, goal_m, n) -> dict[str, torch.Tensor]:
        """Per candidate: evidence (past reconstruction + KL over the past), goal (goal error + KL
        over the future) and their sum, at z = mu_q."""
        model = self.model
        B, W, _ = a_mu.shape
        out = model.posterior_forward(a_mu, a_ls, None, model.zero_state(B), True, fw=self.fw)
        rec_ev = model.coding.reconstruction(out.raw, problem.target, ev_mask[None].expand(B, -1, -1))
        rec_goal = model.coding.reconstruction(out.raw, problem.target, goal_m[None].expand(B, -1, -1))
        kl = kl_diag_gauss(out.mu_q, out.ls_q, out.mu_p, out.ls_p)  # [B, W, Z]
        weights = torch.cat([self.kl_w1.expand(1, 1, -1), self.kl_w.expand(1, W - 1, -1)], dim=1)
        klw = (kl * weights).sum(-1)  # [B, W]
        evidence = rec_ev[:, :n].sum(1) + klw[:, :n].sum(1)
        goal = rec_goal[:, n:].sum(1) + klw[:, n:].sum(1)
        return {"evidence": evidence, "goal": goal, "total": evidence + goal}

    def _goal_errors(self, goal, positions, mods, H) -> tuple[list[float], list[bool]]:
        errors, reached = [], []
        for term in goal:
            last = H - 1
            if term.modality == "joints":
                names = self.trained.joint_names
                comps = term.components or names
                got = positions[last, [names.index(c) for c in comps]]
                err = float(np.max(np.abs(got - np.asarray(term.values, dtype=float))))
            else:
                mod = self.layout.get(term.modality)
                if mod.kind == "categorical":
                    err = float(1.0 - mods[mod.name][last, mod.components.index(term.values[0])])
                else:
                    comps = term.components or mod.components
                    got = mods[mod.name][last, [mod.components.index(c) for c in comps]]
                    err = float(np.linalg.norm(got - np.asarray(term.values, dtype=float)))
            errors.append(err)
            reached.append(err <= term.tolerance)
        return errors, reached
