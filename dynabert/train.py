"""DynaBERT training, stage by stage, resumable and data-parallel.

Stages (any subset, always in this order), each writing its best model as a loadable model dir:
  teacher -> RUN/teacher      ordinary fine-tuning (cross-entropy; MSE for regression)
  rewire  -> RUN/rewired      heads / neurons sorted by importance (no training)
  width   -> RUN/width        DynaBERT_W: teacher = the model entering the stage (frozen)
  depth   -> RUN/width_depth  DynaBERT: widths x depths, teacher = DynaBERT_W (frozen)
  final   -> RUN/final        optional: gold-label loss for every grid sub-network, no teacher
The paper's algorithm, stage by stage, and where we differ from it: docs/algorithm.md.

Per step (docs/training.md says how and why): width = one no-grad teacher forward, then a
forward+backward per width (largest first); depth = one no-grad teacher forward per width (paper:
the teacher at the SAME width; `depth_teacher="full-width"` is the reference code's single full
teacher), then depth outer / width inner, 12 forward+backward (plus `random_subnets` random
per-layer ones, see distill.py); gradients summed, clipped once, one optimizer step. The plans and
losses live in distill.py, the optimiser in optim.py, the run-directory readers in runs.py. Batches are padded to their own longest sequence, so distillation losses on hidden
states average over real tokens only (the reference averages over its fixed padding too).

Files in RUN: run.json (task, backbone, data, TrainConfig), state.json (stages done, scores,
throughput), train.log, checkpoint/ (latest resumable state: weights, optimizer, scheduler, RNG,
step; safetensors + JSON, replaced atomically), one model dir per finished stage.
Resume: the data order of an epoch is a permutation seeded by (seed, stage, epoch), so skipping the
`step` batches already done reproduces the uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import checks
from .backbone import load_model, resolve_model_dir, tokenizer_files
from .checks import differences
from .data import Batch, check_max_length, collate, encode, epoch_batches, eval_batches, load_tokenizer, shard
from .distill import (
    eval_plan,
    hidden_pairs,
    masked_mse,
    plan_weights,
    soft_cross_entropy,
    step_flops,
    step_plan,
    step_teacher_widths,
    training_space,
)
from .distributed import DistInfo, allreduce_grads, barrier, broadcast_params, device_for, init_from_env, shutdown
from .errors import DataError, InvalidSubnetError, ModelLoadError, OutputExistsError
from .evaluate import DevSet, evaluate_subnets, seeded_subset
from .extract import check_uniform
from .io import atomic_dir, check_output_dir, read_json, remove_stale_temporaries, save_tensors, write_json, write_text
from .killpoints import kill_point
from .modeling import DynaBertForSequenceClassification
from .optim import make_optimizer, make_scheduler, optimizer_from_tensors, optimizer_to_tensors
from .rewire import rewire_
from .runs import RunInputs, check_resume, read_state, run_config, run_record
from .subnet import BackboneShape, SubnetConfig, grid_widths
from .tasks import TaskSpec, load_task
from .train_config import STAGE_DIRS, STAGES, TrainConfig, check_resumed

log = logging.getLogger("dynabert.train")


# ---------------------------------------------------------------------------- run files


def _save_model_dir(
    model: DynaBertForSequenceClassification, path: Path, tokenizer_src: list[Path], info: dict
) -> None:
    """A self-contained model dir (config.json, model.safetensors, tokenizer, stage.json), atomically."""
    with atomic_dir(path, overwrite=True) as tmp:
        # Not save_pretrained: it draws a progress bar per call; these two files are all load_model needs.
        save_tensors(tmp / "model.safetensors", model.state_dict(), metadata={"format": "pt"})
        write_text(tmp / "config.json", model.config.to_json_string())
        for f in tokenizer_src:
            if f.parent.resolve() != tmp.resolve():
                shutil.copy2(f, tmp / f.name)
        write_json(tmp / "stage.json", info)


class _Logger:
    def __init__(self, out: Path, info: DistInfo):
        self.info = info
        self.handler = None
        if info.is_main:
            self.handler = logging.FileHandler(out / "train.log", encoding="utf-8")
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(self.handler)
            log.setLevel(logging.INFO)

    def close(self) -> None:
        if self.handler is not None:
            log.removeHandler(self.handler)
            self.handler.close()


# ---------------------------------------------------------------------------- the trainer


class Trainer:
    """Holds one run: data, the model being trained, the run directory. Use `train()` below."""

    def __init__(
        self,
        inputs: RunInputs,
        cfg: TrainConfig,
        info: DistInfo,
        progress: bool,
        on_step: Callable[[str, int], None] | None,
    ):
        self.inputs, self.cfg, self.info, self.progress, self.on_step = inputs, cfg, info, progress, on_step
        self.out = Path(inputs.out_dir)
        self.device = device_for(info)

    def autocast(self) -> torch.autocast:
        """The forward passes' precision: bfloat16 autocast under cfg.bf16, else float32 (a no-op context)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    # -- set-up
    def prepare(self, model: DynaBertForSequenceClassification, spec: TaskSpec, train, dev) -> None:
        cfg = self.cfg
        self.spec = spec
        self.model_dir = resolve_model_dir(self.inputs.model_dir)
        self.tok_files = tokenizer_files(self.model_dir)
        tokenizer = load_tokenizer(self.model_dir)
        regression = spec.is_regression
        # Held-out rewiring examples and the training subset come from one seeded shuffle of train,
        # whichever stages run, so separate invocations of one run agree on them.
        g = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(len(train), generator=g).tolist()
        n_hold = min(cfg.rewire_examples, len(train) // 10) if cfg.rewire_data == "heldout" else 0
        hold_idx, rest = perm[:n_hold], perm[n_hold:]
        train_idx = rest[: cfg.train_subset] if cfg.train_subset else rest
        if not train_idx:
            raise DataError(
                f"the training set is empty after holding out {n_hold} example(s) for rewiring ({train.source})"
            )
        self.train_enc = encode(train.subset(train_idx), tokenizer, cfg.max_seq_length, regression)
        selection = "all"
        if cfg.dev_subset and cfg.dev_subset < len(dev):
            # Seeded, not the first N: files may be sorted by label (the tweets corpus is).
            dev = dev.subset(seeded_subset(len(dev), cfg.dev_subset, cfg.seed + 1))
            selection = f"subset-{cfg.dev_subset}-seed{cfg.seed + 1}"
        self.dev_enc = encode(dev, tokenizer, cfg.max_seq_length, regression)
        rewire_data = train.subset(hold_idx) if n_hold else dev
        self.rewire_enc = encode(rewire_data, tokenizer, cfg.max_seq_length, regression)
        self.dev = DevSet(self.dev_enc, cfg.eval_batch_size, selection, cfg.max_seq_length).to(self.device)
        if spec.labels:  # label names travel with every saved model (exports show them too)
            model.config.id2label = dict(enumerate(spec.labels))
            model.config.label2id = {v: i for i, v in enumerate(spec.labels)}
        self.model = model.to(self.device)
        self.shape = BackboneShape.from_config(model.config)
        self.n_holdout = n_hold

    def provenance(self) -> dict:
        """Written beside every saved model: what produced it (the run's task and configuration)."""
        return {"task": self.spec.to_dict(), "source_model": str(self.model_dir), "config": self.cfg.to_dict()}

    # -- checkpoints
    def save_checkpoint(
        self,
        stage: str,
        step: int,
        total: int,
        opt,
        best: float,
        history: list,
        seconds: float = 0.0,
        parts: tuple[dict, int] | None = None,
    ) -> None:
        if not self.info.is_main:
            return
        tensors, meta = optimizer_to_tensors(opt)
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        with atomic_dir(self.out / "checkpoint", overwrite=True) as tmp:
            save_tensors(tmp / "model.safetensors", self.model.state_dict())
            save_tensors(tmp / "optimizer.safetensors", tensors)
            save_tensors(tmp / "rng.safetensors", rng)
            write_json(tmp / "optimizer.json", meta)
            write_json(
                tmp / "checkpoint.json",
                {
                    "stage": stage,
                    "step": step,
                    "total_steps": total,
                    "best": best,
                    "history": history,
                    "train_seconds": seconds,  # the stage's training seconds so far, every invocation
                    # the loss parts summed over the stage's steps so far, every invocation (a resumed run
                    # reports the same means as an uninterrupted one)
                    **({"loss_parts": {"sum": parts[0], "steps": parts[1]}} if parts is not None else {}),
                    "backbone": self.shape.to_dict(),
                    "task": self.spec.name,
                },
            )
        kill_point("train-checkpoint")  # test-only: a checkpoint is complete

    def _resumed_parts(self, meta: dict | None) -> tuple[dict, int]:
        """The loss parts' sums and step count a checkpoint carried (zeros for a fresh stage or a checkpoint
        written before they were kept); a malformed entry is refused (ModelLoadError naming the file)."""
        zero = {"logit_kl": 0.0, "teacher_entropy": 0.0, "hidden_mse": 0.0}
        if meta is None or "loss_parts" not in meta:
            return zero, 0
        entry, where = meta["loss_parts"], self.out / "checkpoint" / "checkpoint.json"
        ok = isinstance(entry, dict) and isinstance(entry.get("sum"), dict) and set(entry["sum"]) == set(zero)
        ok = ok and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in entry["sum"].values()
        )
        steps = entry.get("steps") if isinstance(entry, dict) else None
        if not ok or not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= meta["step"]:
            raise ModelLoadError(
                f"checkpoint file {where} is not a valid checkpoint file: 'loss_parts' must be "
                f"{{'sum': {{{', '.join(zero)}: finite numbers}}, 'steps': an integer in 0..{meta['step']}}}"
            )
        return {k: float(v) for k, v in entry["sum"].items()}, steps

    def load_checkpoint(self, stage: str):
        ck = self.out / "checkpoint"
        meta_p = ck / "checkpoint.json"
        if not meta_p.is_file():
            return None
        meta = read_json(meta_p, "checkpoint file", error=ModelLoadError)
        missing = [k for k in ("stage", "step", "best", "history", "backbone", "task") if k not in meta]
        if missing or not isinstance(meta["step"], int) or not isinstance(meta["history"], list):
            raise ModelLoadError(
                f"checkpoint file {meta_p} is not a valid checkpoint file: "
                + (f"missing {missing}" if missing else "'step' must be an integer and 'history' a list")
            )
        if meta["stage"] != stage:
            return None
        theirs = {"task": meta["task"], "backbone": meta["backbone"]}
        diffs = differences(theirs, {"task": self.spec.name, "backbone": self.shape.to_dict()})
        if diffs:  # the checkpoint's value -> this run's
            raise ModelLoadError(f"checkpoint {ck} is not of this run ({'; '.join(diffs)})")
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(ck / "model.safetensors"), device=str(self.device)))
        opt_meta = read_json(ck / "optimizer.json", "checkpoint file", error=ModelLoadError)
        return meta, load_file(str(ck / "optimizer.safetensors")), opt_meta, load_file(str(ck / "rng.safetensors"))

    # -- one stage
    def evaluate(self, stage: str) -> tuple[float, dict]:
        plan = eval_plan(self.shape, stage, self.cfg)
        table = evaluate_subnets(self.model, self.dev, plan, self.spec.metrics)
        first = self.spec.metrics[0]
        scores = {f"{r.width:g}x{r.depth:g}": round(float(getattr(r, first)), 4) for r in table.itertuples()}
        return float(table[first].sum()), scores

    def sub_losses(self, stage: str, b: Batch, scale: float, teacher, step: int) -> float:
        """Forward + backward of every sub-network of global step `step` (0-based); returns the summed
        loss (for display). The forwards run under self.autocast() (bfloat16 with cfg.bf16); the losses are
        computed in float32 from float32 copies of the logits and hidden states, the backward outside it."""
        cfg, model, L = self.cfg, self.model, self.shape.num_layers
        kw = dict(attention_mask=b.attention_mask, token_type_ids=b.token_type_ids)
        plan = step_plan(self.shape, stage, cfg, step)
        total = 0.0
        if stage in ("teacher", "final"):
            for _w, _d, sub in plan:
                active = None if stage == "teacher" else sub.active_spec()
                with self.autocast():
                    logits = model(b.input_ids, active=active, **kw).logits
                loss = model.gold_loss(logits.float(), b.labels) * scale
                loss.backward()
                total += loss.item()
            return total
        lw, hw = (
            (cfg.width_logit_weight, cfg.width_hidden_weight)
            if stage == "width"
            else (cfg.depth_logit_weight, cfg.depth_hidden_weight)
        )
        if self.spec.is_regression:
            lw = 0.0  # the reference drops the logit term for STS-B
        t_out = {}  # width -> (logits, hidden states), float32 (a no-op cast without bf16)
        with torch.no_grad(), self.autocast():  # the frozen teacher: once per width it is needed at, per step
            t_emb = teacher.embeddings(b.input_ids, b.token_type_ids)  # eval mode: the same for every width
            for w in step_teacher_widths(self.shape, stage, cfg, plan):
                sub = SubnetConfig.from_grid(self.shape, w, 1.0)
                o = teacher(
                    b.input_ids,
                    active=None if w == 1.0 else sub.active_spec(),
                    output_hidden_states=True,
                    embedding_output=t_emb,
                    **kw,
                )
                t_out[w] = (o.logits.float(), [h.float() for h in o.hidden_states])
        # The embedding output is never sliced: compute it once per step for all sub-networks, let each
        # sub-network's backward stop at a detached copy, and run the embeddings' backward once with the
        # summed gradient (the word-embedding gradient is a dense vocab x hidden tensor: 12 backward
        # passes through it cost more than one). Its dropout mask is shared by the step's sub-networks.
        with self.autocast():
            emb = model.embeddings(b.input_ids, b.token_type_ids)
        emb_in = emb.detach().requires_grad_(True)
        for (w, _d, sub), weight in zip(plan, plan_weights(stage, cfg, plan)):  # sampled ones: --space-weight
            t_logits, t_hidden = t_out[w] if w in t_out else t_out[1.0]  # random per-layer ones (w None): full width
            with self.autocast():
                s = model(
                    b.input_ids, active=sub.active_spec(), output_hidden_states=True, embedding_output=emb_in, **kw
                )
            s_logits = s.logits.float()
            loss = s_logits.new_zeros(())
            if lw:
                sce = soft_cross_entropy(s_logits, t_logits)
                loss = loss + lw * sce
                # SCE = H(teacher) + KL(teacher || student): the entropy is a floor no step can lower,
                # so it is logged apart from what training can move (the KL and the hidden-state MSE).
                with torch.no_grad():
                    ent = soft_cross_entropy(t_logits, t_logits).item()
                self.loss_parts["teacher_entropy"] += lw * ent * scale
                self.loss_parts["logit_kl"] += lw * (sce.item() - ent) * scale
            if hw:
                hidden = s_logits.new_zeros(())
                for j, k in hidden_pairs(sub, L):
                    hidden = hidden + masked_mse(s.hidden_states[j].float(), t_hidden[k], b.attention_mask)
                loss = loss + hw * hidden
                self.loss_parts["hidden_mse"] += hw * hidden.item() * scale
            loss = loss * scale
            if weight != 1.0:
                loss = loss * weight
            loss.backward()
            total += loss.item()
        emb.backward(emb_in.grad)
        return total

    def _parts_text(self, steps: int) -> str:
        """Mean per step, summed over the step's sub-networks, of the distillation loss's parts."""
        p = getattr(self, "loss_parts", None)
        if not steps or not p or not any(p.values()):
            return ""
        n = steps
        return (
            f"; mean loss per step = logit KL {p['logit_kl'] / n:.3f} + teacher entropy (floor) "
            f"{p['teacher_entropy'] / n:.3f} + hidden MSE {p['hidden_mse'] / n:.3f}"
        )

    def run_stage(self, stage: str, state: dict) -> None:
        cfg, info = self.cfg, self.info
        teacher = None
        if stage in ("width", "depth"):
            teacher = copy.deepcopy(self.model).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        n = len(self.train_enc)
        per_epoch = math.ceil(n / cfg.batch_size)
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs_for(stage) * per_epoch))
        self.model.train()
        opt = make_optimizer(self.model, cfg, stage)
        step, best, history = 0, -math.inf, []
        ck = self.load_checkpoint(stage)
        if ck is not None:
            meta, opt_t, opt_meta, rng = ck
            optimizer_from_tensors(opt, opt_t, opt_meta)
            step, best, history = meta["step"], meta["best"], meta["history"]
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            log.info("stage %s: resumed at step %d/%d (best dev score %.4f)", stage, step, total, best)
        sched = make_scheduler(opt, total, cfg, step)
        params = [p for p in self.model.parameters() if p.requires_grad]
        n_sub = len(step_plan(self.shape, stage, cfg, 0))
        log.info(
            "stage %s: %d steps (%d per epoch), %d train examples, %d sub-network(s) per step, %d process(es), lr %g",
            stage,
            total,
            per_epoch,
            n,
            n_sub,
            info.world,
            cfg.lr_for(stage),
        )
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total, initial=step, desc=stage, disable=not (self.progress and info.is_main), dynamic_ncols=True
        )
        lengths = self.train_enc.lengths()
        batches_of: dict[int, list] = {}

        def batch_at(i: int) -> list:  # the global batch of step i (the data order is seeded: see the docstring)
            e, p = divmod(i, per_epoch)
            if e not in batches_of:
                batches_of.clear()
                batches_of[e] = epoch_batches(
                    n, cfg.batch_size, cfg.seed, stage, e, lengths if cfg.group_by_length else None
                )
            return batches_of[e][p]

        # Compute of the whole stage (issue 25): the steps a resumed run skipped are counted again from their data.
        flops = {"student": 0, "teacher": 0}
        for i in range(step):
            for k, v in step_flops(self.shape, stage, cfg, i, [lengths[j] for j in batch_at(i)]).items():
                flops[k] += v
        stage_secs = float(ck[0].get("train_seconds", 0.0)) if ck is not None else 0.0
        seen, train_secs = 0, 0.0
        self.loss_parts, parts_steps = self._resumed_parts(ck[0] if ck is not None else None)
        while step < total:
            global_idx = batch_at(step)
            for k, v in step_flops(self.shape, stage, cfg, step, [lengths[j] for j in global_idx]).items():
                flops[k] += v
            local = shard(global_idx, info.rank, info.world)
            t0 = time.perf_counter()
            loss = 0.0
            if local:
                b = collate(self.train_enc, local).to(self.device)
                loss = self.sub_losses(stage, b, len(local) * info.world / len(global_idx), teacher, step)
            allreduce_grads(params, info)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            parts_steps += 1
            train_secs += time.perf_counter() - t0
            seen += len(global_idx)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", ex_s=f"{seen / train_secs:.1f}")
            end_of_epoch = step % per_epoch == 0
            due = step == total or (step % cfg.eval_every == 0 if cfg.eval_every else end_of_epoch)
            if due:
                score, scores = self.evaluate(stage)
                history.append({"step": step, "score": score, "scores": scores})
                log.info("stage %s step %d: dev %s sum %.4f %s", stage, step, self.spec.metrics[0], score, scores)
                if score > best:
                    best = score
                    if info.is_main:
                        _save_model_dir(
                            self.model,
                            self.out / STAGE_DIRS[stage],
                            self.tok_files,
                            {"stage": stage, "step": step, "score": score, "scores": scores, **self.provenance()},
                        )
            if step % cfg.checkpoint_every == 0 or step == total:
                self.save_checkpoint(
                    stage, step, total, opt, best, history, stage_secs + train_secs, (self.loss_parts, parts_steps)
                )
                barrier(info)
            if step % 50 == 0 or step == total:
                log.info(
                    "stage %s step %d/%d loss %.4f  %.2f examples/s%s",
                    stage,
                    step,
                    total,
                    loss,
                    seen / max(train_secs, 1e-9),
                    self._parts_text(parts_steps),
                )
            if self.on_step is not None:
                self.on_step(stage, step)
        bar.close()
        barrier(info)
        # The stage's product is its best checkpoint (the paper's model selection).
        best_dir = self.out / STAGE_DIRS[stage]
        self.model = load_model(best_dir).to(self.device)
        if seen:
            # Throughput: this invocation's steps only (a resumed stage reports what it ran after resuming);
            # loss parts: every step of the stage (their sums travel in the checkpoint).
            state["throughput"][stage] = {
                "examples_per_s": seen / train_secs,
                "examples": seen,
                "seconds": train_secs,
                "subnets_per_step": n_sub,
            }
        if parts_steps and stage in ("width", "depth"):
            state.setdefault("loss_parts", {})[stage] = {k: v / parts_steps for k, v in self.loss_parts.items()}
        state["scores"][stage] = {"best": best, "history": history}
        compute = state.setdefault("compute", {})
        compute[stage] = {
            "flops": flops["student"] + flops["teacher"],
            "student_flops": flops["student"],
            "teacher_flops": flops["teacher"],
            "steps": total,
            "seconds": stage_secs + train_secs,  # training steps' wall time, every invocation (evaluation excluded)
            "subnets_per_step": n_sub,
        }
        stages = [k for k in compute if k != "total"]
        compute["total"] = {
            k: sum(compute[s][k] for s in stages)
            for k in ("flops", "student_flops", "teacher_flops", "steps", "seconds")
        }
        log.info(
            "stage %s: compute %.4g FLOPs (student forward+backward %.4g, teacher forward %.4g), %d steps, %.1f s",
            stage,
            compute[stage]["flops"],
            flops["student"],
            flops["teacher"],
            total,
            compute[stage]["seconds"],
        )

    def run_rewire(self, state: dict) -> None:
        batches, _ = eval_batches(self.rewire_enc, self.cfg.batch_size)
        probe = self.dev.batches[0]
        with torch.inference_mode():
            self.model.eval()
            before = self.model(
                probe.input_ids, attention_mask=probe.attention_mask, token_type_ids=probe.token_type_ids
            ).logits
        record = rewire_(self.model, batches)
        with torch.inference_mode():
            after = self.model(
                probe.input_ids, attention_mask=probe.attention_mask, token_type_ids=probe.token_type_ids
            ).logits
        diff = float((before - after).abs().max())
        log.info(
            "rewire: importance on %d %s example(s); full-width logits changed by %.2e",
            len(self.rewire_enc),
            "held-out train" if self.cfg.rewire_data == "heldout" else "dev",
            diff,
        )
        record.update({"data": self.cfg.rewire_data, "examples": len(self.rewire_enc), "max_logit_change": diff})
        if self.info.is_main:
            _save_model_dir(
                self.model,
                self.out / STAGE_DIRS["rewire"],
                self.tok_files,
                {"stage": "rewire", **record, **self.provenance()},
            )
        barrier(self.info)
        state["scores"]["rewire"] = {"max_logit_change": diff}


def train(
    inputs: RunInputs,
    cfg: TrainConfig = TrainConfig(),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_step: Callable[[str, int], None] | None = None,
    given: frozenset[str] = frozenset(),
) -> dict:
    """Run the configured stages; returns state.json's content. Under torchrun every process calls this.

    on_step(stage, step) is called after every optimizer step (tests use it to interrupt a run).
    given: the fields of `cfg` the caller named (a resumed run refuses one that differs from run.json's,
    even at its default value; see check_resumed).
    """
    info = init_from_env()
    out = Path(inputs.out_dir)
    model_dir = resolve_model_dir(inputs.model_dir)
    asked = cfg  # the caller's configuration: a resumed run trains with its own (checked against this below)
    if resume:
        if not out.is_dir():
            raise OutputExistsError(f"cannot resume: run directory '{out}' does not exist")
        saved = run_config(out)  # the run's own configuration (checked against this call below)
        cfg = saved if saved is not None else cfg
        read_state(out)  # a broken state file is refused before anything is written
    else:
        check_output_dir(out, overwrite)
    spec, train_data, dev_data = load_task(inputs.task, inputs.data_dir, inputs.train_file, inputs.dev_file)
    model = load_model(model_dir, num_labels=spec.num_labels, seed=cfg.seed)
    shape = BackboneShape.from_config(model.config)
    if resume:
        cfg = check_resume(out, spec, model_dir, shape)
        check_resumed(asked, cfg, f"{out}/run.json", given)  # what the caller set must agree with the run's own
    if cfg.bf16:  # where bf16 is emulated it is slower than float32: refused before anything is written
        checks.require_native_bf16(
            f"the run's bf16 ({out}/run.json)" if resume else "--bf16",
            device_for(info),
            DataError,
            "resume it on such a machine, or train a new run without --bf16" if resume else "train without --bf16",
        )
    # An exported sub-network trains as a backbone of its own (its shape is its own, see
    # BackboneShape.from_config). Rewiring and the width/depth stages cut every layer to one width,
    # so they need a uniform one; the teacher stage fine-tunes the model as built, whatever its shape.
    cutting = [s for s in cfg.stages if s != "teacher"]
    if cutting:
        check_uniform(model, f"the stage(s) {', '.join(cutting)} (rewiring and width/depth multipliers)")
        kept = grid_widths(shape, cfg.widths)
        if any(s in cfg.stages for s in ("width", "depth", "final")) and len(kept) < len(cfg.widths):
            bad = ", ".join(f"{w:g}" for w in cfg.widths if w not in kept)
            raise InvalidSubnetError(
                f"width multiplier(s) {bad} keep round({shape.num_heads} * width) = 0 heads of this {shape.num_heads}-head "
                f"model; pass --widths without them (e.g. --widths {','.join(f'{w:g}' for w in kept) or '1'})"
            )
    if cfg.space_samples and any(s in cfg.stages for s in ("width", "depth")):
        try:  # a space that does not fit the backbone: refused before anything is written
            training_space(shape, cfg)
        except DataError as e:
            where = f" of {out / 'run.json'}" if resume else ""
            raise DataError(f"training space{where}: {e}") from None
    check_max_length(cfg.max_seq_length, model.config)
    torch.manual_seed(cfg.seed)
    trainer = Trainer(inputs, cfg, info, progress, on_step)
    trainer.prepare(model, spec, train_data, dev_data)
    broadcast_params(trainer.model, info)
    if info.is_main and not resume:
        if out.exists() and overwrite:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)  # killed runs' leftovers beside it (any command's)
        write_json(
            out / "run.json", run_record(inputs, spec, cfg, shape, model_dir, len(trainer.train_enc), trainer.n_holdout)
        )
    barrier(info)
    logger = _Logger(out, info)
    try:
        state = read_state(out)
        log.info(
            "run %s: task %s, backbone %s, stages %s%s",
            out,
            spec.name,
            model_dir,
            list(cfg.stages),
            " (resumed)" if resume else "",
        )
        for stage in [s for s in STAGES if s in cfg.stages]:
            stage_dir = out / STAGE_DIRS[stage]
            if stage in state["completed"]:
                trainer.model = load_model(stage_dir).to(trainer.device)
                log.info("stage %s: already done, loaded %s", stage, stage_dir)
                continue
            if stage == "rewire":
                trainer.run_rewire(state)
            else:
                torch.manual_seed(cfg.seed + STAGES.index(stage))
                trainer.run_stage(stage, state)
            kill_point("train-stage-done")  # test-only: the stage's model is saved, state.json does not say so yet
            state["completed"].append(stage)
            state["model"] = STAGE_DIRS[stage]
            if info.is_main:
                write_json(out / "state.json", state)
            barrier(info)
        log.info("run %s: done; final model %s", out, state["model"])
        return state
    finally:
        logger.close()
        shutdown(info)
