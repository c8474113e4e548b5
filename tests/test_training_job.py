"""core/training/job.py, fields.py, checkpoint loading and schedule parsing: the glue the node and the CLI share.

No model here: these are the checks that must fail in a second, before any encoding or training step.
"""

from __future__ import annotations

import json
import zipfile
from types import SimpleNamespace

import pytest
import torch
from identitylock.core.errors import IdentityLockError
from identitylock.core.fileio import OutputPathError, default_file_mode
from identitylock.core.training import job
from identitylock.core.training.checkpoint import (
    TrainingStateError,
    load_checkpoint,
    save_checkpoint,
)
from identitylock.core.training.convergence import ControllerConfig
from identitylock.core.training.phases import Phase, Schedule
from identitylock.core.training.presets import Preset, TrainConfig, get_preset, load_schedule


class Gadget:
    """Any class: a pickle of it names a global that torch's weights_only loader refuses."""

    def __init__(self):
        self.payload = [1, 2, 3]


def _valid_state(step: int = 5) -> dict:
    return {
        "version": 1, "config": TrainConfig().to_dict(), "step": step, "phase_index": 0, "phase_started": False,
        "network": {"a": torch.zeros(2)}, "alpha": 4.0, "controller": {},
    }  # fmt: skip


# -- hostile checkpoints (issue 15: torch's message advised weights_only=False) ---------------------------------
def _hostile_checkpoints(tmp_path):
    bad = {}
    bad["custom_class"] = tmp_path / "custom.pt"
    torch.save({"version": 1, "x": Gadget()}, bad["custom_class"])
    good = tmp_path / "good.pt"
    save_checkpoint(good, _valid_state())
    raw = good.read_bytes()
    bad["truncated"] = tmp_path / "truncated.pt"
    bad["truncated"].write_bytes(raw[: len(raw) // 2])
    bad["not_torch"] = tmp_path / "text.pt"
    bad["not_torch"].write_text("hello, I am not a checkpoint\n")
    bad["empty"] = tmp_path / "empty.pt"
    bad["empty"].write_bytes(b"")
    bad["zip_not_torch"] = tmp_path / "zip.pt"
    with zipfile.ZipFile(bad["zip_not_torch"], "w") as zf:
        zf.writestr("a.txt", "x")
    bad["list_not_state"] = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], bad["list_not_state"])
    bad["wrong_version"] = tmp_path / "v2.pt"
    torch.save({**_valid_state(), "version": 2}, bad["wrong_version"])
    return bad


def test_hostile_checkpoint_gives_our_sentence_never_unpickling_advice(tmp_path):
    for kind, path in _hostile_checkpoints(tmp_path).items():
        with pytest.raises(TrainingStateError) as err:
            job.saved_state(path, resume=True)
        msg = str(err.value)
        assert "weights_only" not in msg and "\n" not in msg, (kind, msg)
        assert str(path) in msg and "--overwrite" in msg, (kind, msg)
        objects = "holds Python objects" in msg
        assert objects == (kind == "custom_class"), (kind, msg)  # the reason given is the true one
        # torch's exception (whose text advises weights_only=False) is not chained into what a UI may print
        assert err.value.__cause__ is None and (
            err.value.__context__ is None or err.value.__suppress_context__
        ), kind
    assert job.saved_state(tmp_path / "good.pt", resume=True)["step"] == 5
    assert load_checkpoint(tmp_path / "list.pt")[0].shape == (
        1,
    )  # the loader itself takes any weights-only file


# -- resume / start over (issue 15: a new run silently discarded an interrupted run) ---------------------------
def test_check_outputs_refuses_to_discard_a_saved_run(tmp_path):
    lora, state = tmp_path / "lisa.safetensors", tmp_path / "lisa.safetensors.state.pt"
    job.check_outputs(lora, state, resume=False, overwrite=False)  # nothing saved: a new run
    assert job.saved_state(state, resume=False) is None
    with pytest.raises(TrainingStateError, match="nothing to resume"):
        job.check_outputs(lora, state, resume=True, overwrite=False)
    save_checkpoint(state, _valid_state(25))
    before = state.read_bytes()
    with pytest.raises(TrainingStateError) as err:
        job.check_outputs(lora, state, resume=False, overwrite=False)
    assert "--resume" in str(err.value) and "--overwrite" in str(err.value)
    with pytest.raises(TrainingStateError) as err:
        job.check_outputs(lora, state, resume=False, overwrite=False, spelling=job.NODE)
    assert "resume widget" in str(err.value) and "overwrite widget" in str(err.value)
    assert state.read_bytes() == before
    job.check_outputs(lora, state, resume=True, overwrite=False)
    assert job.saved_state(state, resume=True)["step"] == 25
    job.check_outputs(lora, state, resume=False, overwrite=True)
    state.write_bytes(b"junk")
    with pytest.raises(TrainingStateError, match="set the overwrite widget to true to start over"):
        job.saved_state(state, resume=True, spelling=job.NODE)


def test_check_outputs_before_any_work(tmp_path):
    lora, state = tmp_path / "out" / "a.safetensors", tmp_path / "out" / "a.safetensors.state.pt"
    job.check_outputs(lora, state, resume=False, overwrite=False)
    assert lora.parent.is_dir()  # created up front
    with pytest.raises(TrainingStateError, match="contradict"):
        job.check_outputs(lora, state, resume=True, overwrite=True)
    lora.write_bytes(b"old")
    with pytest.raises(OutputPathError, match="already exists.*--overwrite"):
        job.check_outputs(lora, state, resume=False, overwrite=False)
    with pytest.raises(OutputPathError, match="overwrite widget"):
        job.check_outputs(lora, state, resume=False, overwrite=False, spelling=job.NODE)
    job.check_outputs(lora, state, resume=False, overwrite=True)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputPathError, match="existing file, not a folder"):
        job.check_outputs(a_file / "a.safetensors", state, resume=False, overwrite=False)
    with pytest.raises(OutputPathError, match="is a folder"):
        job.check_outputs(tmp_path, state, resume=False, overwrite=False)
    with pytest.raises(OutputPathError, match="is a folder"):
        job.check_outputs(lora, tmp_path, resume=False, overwrite=True)
    save_checkpoint(state, _valid_state())
    job.check_outputs(lora, state, resume=True, overwrite=False)  # resume rewrites its own run's file


def test_paths():
    assert job.node_state_path("/o", "x.safetensors") == job.Path(
        "/o/identitylock_training/x.safetensors.state.pt"
    )
    assert job.cli_state_path("l/x.safetensors") == job.Path("l/x.safetensors.state.pt")
    assert job.cli_state_path("l/x.safetensors", "s.pt") == job.Path("s.pt")


# -- config from values, and typed JSON (issue 15: wrong config types gave tracebacks) -------------------------
def test_build_config_from_widget_values():
    cfg = job.build_config("TINY_TEST", 10, schedule="fixed", seed=3, rank=8, window=7, checkpoint_every=5)
    assert (cfg.rank, cfg.alpha, cfg.seed, cfg.controller.window, cfg.checkpoint_every) == (8, 8, 3, 7, 5)
    assert not cfg.schedule.adaptive and cfg.schedule.phases[0].max_steps == 200
    adaptive = job.build_config("TINY_TEST", 10)
    assert [p.name for p in adaptive.schedule.phases] == ["COARSE", "MID", "MID_FINE", "FINAL_FINE"]
    assert adaptive.rank == 4
    for bad in ({"schedule": "weekly"}, {"window": 0}, {"p_threshold": float("nan")}, {"significance": 2.0},
                {"min_val_gain": -1.0}, {"rank": -1}, {"exit_on": "never"}):  # fmt: skip
        with pytest.raises(IdentityLockError):
            job.build_config("TINY_TEST", 10, **bad)


WRONG_TYPES = [
    ('[{"name": "A", "lr": "fast", "alpha": 4}]', "lr must be a finite number, got text"),
    (
        '[{"name": "A", "lr": 1e-4, "alpha": 4, "max_steps": [1]}]',
        "max_steps must be a whole number, got a list",
    ),
    ('[{"name": "A", "lr": 1e-4, "alpha": 4, "max_steps": true}]', "max_steps must be a whole number"),
    ('[{"name": "A", "lr": 1e-4, "alpha": 4, "max_steps": 2.5}]', "max_steps must be a whole number"),
    ('[{"name": "A", "lr": 1e-4, "alpha": "4"}]', "alpha must be a finite number or null"),
    ('[{"name": 5, "lr": 1e-4, "alpha": 4}]', "name must be text"),
    ('[{"name": "A", "lr": 1e-4, "alpha": 4, "colour": 1}]', "unknown field"),
    ('["A"]', "phase must be a JSON object"),
    ("[[1, 2]]", "must be a JSON object"),
    ('{"phases": {"name": "A"}}', "phases must be a list"),
    ('{"adaptive": "yes", "phases": []}', "adaptive must be true/false"),
    ("[]", "at least one phase"),
    ('{"phases": [', "not valid JSON"),
    ("[" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize("text,expected", WRONG_TYPES)
def test_schedule_json_types_are_checked(text, expected):
    with pytest.raises(ValueError, match=expected):
        load_schedule(text)


def test_preset_and_config_types_are_checked(tmp_path):
    with pytest.raises(ValueError, match="rank must be a whole number, got text"):
        Preset.from_dict({"name": "p", "rank": "16", "alpha": 16, "lr": 1e-4})
    with pytest.raises(ValueError, match="preset must be a JSON object"):
        Preset.from_dict([1, 2])
    with pytest.raises(ValueError, match="controller: window must be a whole number"):
        ControllerConfig.from_dict({"window": "50"})
    with pytest.raises(ValueError, match="config: seed must be a whole number"):
        TrainConfig.from_dict({"seed": "0"})
    cfg = TrainConfig(schedule=Schedule([Phase("A", 1e-4, 4, min_steps=3, max_steps=9)]))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for content, expected in ((b'{"name": "p", "rank": [], "alpha": 1, "lr": 1}', "rank must be"),
                              (b"\xff\xfe not utf-8", "not UTF-8"), (b"{oops", "not valid JSON"),
                              (b'["a"]', "must be a JSON object")):  # fmt: skip
        f = tmp_path / "p.json"
        f.write_bytes(content)
        with pytest.raises(ValueError, match=expected):
            get_preset(str(f))


def test_node_phases_never_read_a_path(tmp_path):
    """Issue 15: phases_json read any JSON file on the server. With allow_paths=False only JSON text or a plain
    name inside the one phases folder is accepted."""
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps([{"name": "STOLEN", "lr": 1e-4, "alpha": 4}]))
    folder = tmp_path / "phases"
    folder.mkdir()
    (folder / "short.json").write_text(json.dumps([{"name": "SHORT", "lr": 1e-4, "alpha": 4}]))
    (folder / "escape.json").symlink_to(outside)
    for src in (str(outside), "../secret", "../secret.json", f"{folder}/../secret", "/etc/passwd", "~/x",
                "escape", "short/../../secret"):  # fmt: skip
        with pytest.raises(ValueError) as err:
            load_schedule(src, folder=folder, allow_paths=False)
        assert "STOLEN" not in str(err.value)
    with pytest.raises(ValueError, match="paths are not read"):
        load_schedule(str(outside), folder=None, allow_paths=False)
    assert load_schedule("short", folder=folder, allow_paths=False).phases[0].name == "SHORT"
    assert load_schedule("short.json", folder=folder, allow_paths=False).phases[0].name == "SHORT"
    text = '[{"name": "T", "lr": 1e-4, "alpha": 4}]'
    assert load_schedule(text, allow_paths=False).phases[0].name == "T"
    assert load_schedule(str(outside)).phases[0].name == "STOLEN"  # the CLI reads the user's own files


# -- progress glue and what is saved ----------------------------------------------------------------------------
def test_step_reporter_updates_bar_preview_and_status():
    class Bar:
        total, calls = 0, []

        def update(self, n, preview=None):
            self.calls.append((n, preview is not None))

    sent = []
    bar = Bar()
    rep = job.StepReporter(bar, sent.append, preview_every=2)
    snap = SimpleNamespace(losses=[1.0, 0.9, 0.8], val_losses=[], steps=3, phase_starts=[(0, "A")], exits=[])
    rep.snapshot = lambda: snap

    def info(step, val=None):
        return SimpleNamespace(step=step, phase="A", loss=0.5, lr=1e-4, slope=None, p_value=None,
                               eta_seconds=1.234, val_loss=val, max_total_steps=40)  # fmt: skip

    for s, v in ((1, None), (2, None), (3, None), (5, 0.3)):
        rep(info(s, v))
    assert bar.total == 40
    assert bar.calls == [(1, True), (1, True), (1, False), (1, True)]  # step 1, every 2nd, validations
    assert sent[0] == {"phase": "A", "step": 1, "loss": 0.5, "lr": 1e-4, "slope": None, "p_value": None,
                       "eta_seconds": 1.2, "val_loss": None, "max_steps": 40}  # fmt: skip


def test_lora_to_save_picks_best_probe_and_sets_network():
    from identitylock.core.training.network import LoRANetwork
    from identitylock.core.training.probe import ProbeTracker

    net = LoRANetwork(2, 8)
    net.add("lora_unet_x", 4, 4)
    tracker = ProbeTracker()
    result = SimpleNamespace(probes=tracker)
    state, extra = job.lora_to_save(net, result)
    assert extra == {"alpha": 8.0} and set(state) == set(net.kohya_state_dict())
    best = {k: torch.full_like(v, 0.5) for k, v in net.kohya_state_dict().items()}
    best["lora_unet_x.alpha"] = torch.tensor(2.0)
    tracker.record(10, "A", [0.1], state_fn=lambda: best)
    state, extra = job.lora_to_save(net, result)
    assert state is best and extra == {"selected": "best identity probe at step 10", "alpha": 2.0}
    assert net.alpha == 2.0 and torch.equal(
        net.kohya_state_dict()["lora_unet_x.lora_up.weight"], best["lora_unet_x.lora_up.weight"]
    )
    assert job.lora_to_save(net, result, keep_best_probe=False)[1] == {"alpha": 2.0}


def test_checkpoint_has_normal_permissions(tmp_path):
    path = save_checkpoint(tmp_path / "s.pt", _valid_state())
    assert (path.stat().st_mode & 0o777) == default_file_mode()
