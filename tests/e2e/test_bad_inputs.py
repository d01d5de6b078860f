"""Bad input at the user's edge, one table: each case's message (the value, where, the fix), its exit status, and
that it stopped before the student's weights loaded wherever the plugin can know it. No case changes the files
of another run, and a refused run writes nothing of its own.

Cases run in this process through the CLI's ``main()`` or swift's real ``sft_main`` (tests/support/bad_inputs.py
holds the world they run in); ``test_real_swift_sft`` repeats a handful as real ``swift sft`` commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.bad_inputs import (
    BASE_CONFIG,
    IMAGE_ROW,
    LONG_ROW,
    SECRET,
    STUDENT_LOADED,
    TEXT_ROW,
    Case,
    build_world,
    fill,
    fingerprint,
    new_run_folders,
    run_case,
    write_case_files,
)
from tests.support.swift_runs import OFFLINE, run_sft

C = BASE_CONFIG
SELF = "teacher:\n  model: self\n"


def cfg(extra: str, teacher: str = "{teacher}") -> str:
    return f"teacher:\n  model: {teacher}\n{extra}"


def img(path_key: str, **extra) -> dict:
    return {**IMAGE_ROW, "images": ["{" + path_key + "}"], **extra}


def text(**extra) -> dict:
    return {**TEXT_ROW, **extra}


# fmt: off
CONFIG_CASES = [
    Case("duplicate-key", "validate",
         ("loss.lambda is set twice: line 4 ('1.0') and line 5 ('50.0')", "Fix: keep one"), 2,
         config="teacher:\n  model: x\nloss:\n  lambda: 1.0\n  lambda: 50.0\n"),
    Case("blank-teacher", "validate", ("teacher.model = '   ' (line 2): blank", "Fix: write a value"), 2,
         config='teacher:\n  model: "   "\n'),
    Case("blank-list-item", "validate", ("tagging.category_fields[0] = ' ' (line 4): blank",), 2,
         config='teacher:\n  model: x\ntagging:\n  category_fields: [" "]\n'),
    Case("teacher-as-string", "validate",
         ("teacher = 'Qwen/Qwen2.5-7B-Instruct' (line 1)", "a section of settings", "model: Qwen/Qwen2.5-7B-Instruct"),
         2, config="teacher: Qwen/Qwen2.5-7B-Instruct\n"),
    Case("lambda-nan", "validate", ("loss.lambda = nan (line 4): not a finite number", "Fix: write a number"), 2,
         config=cfg("loss:\n  lambda: .nan\n", "x")),
    Case("temperature-inf", "validate", ("loss.temperature = inf (line 4): not a finite number",), 2,
         config=cfg("loss:\n  temperature: .inf\n", "x")),
    Case("config-is-a-directory", "validate", ("is a directory, not a YAML file", "a.yaml", "Fix: name the file"), 2,
         config=None),
    Case("config-missing", "validate", ("neither a file nor a shipped config", "Fix: name a shipped one"), 2,
         config=None),
    Case("malformed-yaml", "validate", ("is not valid YAML", "line 2"), 2, config="teacher:\n  model: [x\n"),
    Case("typo", "validate", ("loss.tempreature (line 4): unknown key (did you mean `temperature`?)",), 2,
         config=cfg("loss:\n  tempreature: 2\n", "x")),
    Case("unsafe-yaml-tag", "validate", ("is not valid YAML", "python/object"), 2,
         config="teacher: !!python/object/apply:os.system ['echo hi']\n"),
    Case("unset-variable", "validate", ("environment variable LD_UNSET_VAR is not set", "export LD_UNSET_VAR="), 2,
         config=cfg("", "${LD_UNSET_VAR}")),
    Case("empty-config", "validate", ("is empty",), 2, config=""),
    Case("max-rows-zero", "validate", ("preflight.max_rows = 0 (line 4)", "greater than or equal to 1"), 2,
         config=cfg("preflight:\n  max_rows: 0\n", "x")),
    Case("max-bad-rows-negative", "validate", ("preflight.max_bad_rows = -1",), 2,
         config=cfg("preflight:\n  max_bad_rows: -1\n", "x")),
    Case("trust-not-a-bool", "validate", ("teacher.trust_remote_code = 'perhaps' (line 3)",), 2,
         config="teacher:\n  model: x\n  trust_remote_code: perhaps\n"),
    Case("bad-value-in-swift-sft", "sft", ("loss.lambda = -1 (line 4)", "greater than or equal to 0"), 1,
         config=cfg("loss:\n  lambda: -1\n"), args=("--loss_type", "lingudistill")),
    Case("duplicate-key-in-swift-sft", "sft", ("loss is set twice: line 3 (a section) and line 5 (a section)",), 1,
         config=C + "loss:\n  lambda: 2.0\n", args=("--loss_type", "lingudistill")),
]
# fmt: on

# fmt: off
FLAG_CASES = [
    Case("config-without-loss-type", "sft", ("no --loss_type was given", "Fix: add --loss_type lingudistill"), 1),
    Case("loss-type-without-config", "sft", ("needs a plugin config", "LINGUDISTILL_CONFIG="), 1, config=None,
         args=("--loss_type", "lingudistill")),
    Case("dft-loss", "sft", ("--enable_dft_loss would be ignored",), 1,
         args=("--loss_type", "lingudistill", "--enable_dft_loss", "true")),
    Case("monitor-without-dataset", "sft", ("needs monitor.dataset",), 1,
         args=("--loss_type", "lingudistill", "--callbacks", "lingudistill_monitor")),
    Case("monitor-dataset-missing", "sft", ("monitor.dataset '/no/held_out.jsonl' does not exist",), 1,
         config=C + "monitor:\n  dataset: /no/held_out.jsonl\n",
         args=("--loss_type", "lingudistill", "--callbacks", "lingudistill_monitor")),
    Case("add-version-false-over-a-run", "sft",
         ("holds another run (lingudistill_config.yaml, args.json, logging.jsonl, checkpoint-2)", "Nothing was written",
          "drop --add_version false"),
         1, args=("--loss_type", "lingudistill", "--add_version", "false", "--output_dir", "{finished}")),
]
# fmt: on

LD = ("--loss_type", "lingudistill")
# fmt: off
TEACHER_CASES = [
    Case("teacher-missing", "sft", ("teacher.model '/no/such/teacher' does not exist", "Fix:"), 1,
         config=cfg("", "/no/such/teacher"), args=LD),
    Case("teacher-is-the-vlm", "sft", ("is a vision-language model", "Fix: point teacher.model"), 1,
         config=cfg("", "{student}"), args=LD),
    Case("teacher-other-lineage", "sft", ("does not match the student's language model", "norm_eps"), 1,
         config=cfg("", "{other_lineage_teacher}"), args=LD),
    Case("teacher-remote-code", "sft",
         ("config.json has an auto_map (evil.EvilConfig)", "teacher.trust_remote_code is false",
          "none of it was run", "trust_remote_code: true"),
         1, config=cfg("", "{remote_teacher}"), args=LD),
    Case("teacher-remote-tokenizer", "sft", ("tokenizer_config.json has an auto_map (evil.T)",), 1,
         config=cfg("", "{remote_tokenizer_teacher}"), args=LD),
    Case("teacher-unknown-model-type", "sft", ("model_type 'mystery_lm' is not built into transformers",), 1,
         config=cfg("", "{unknown_type_teacher}"), args=LD),
    Case("teacher-without-config", "sft", ("has no config.json",), 1, config=cfg("", "{no_config_teacher}"),
         args=LD),
    Case("teacher-nan-weights", "sft",
         ("hold NaN or infinite values", "model.layers.0.mlp.down_proj.weight (1 of", "plain fine-tuning",
          "teacher_weights: false"),
         1, config=cfg("", "{nan_teacher}"), args=LD),
    Case("teacher-inf-weights", "sft", ("hold NaN or infinite values",), 1, config=cfg("", "{inf_teacher}"),
         args=LD),
]
# fmt: on

# fmt: off
DATA_CASES = [
    Case("distill-maybe", "sft", ("data.jsonl line 4: field 'distill' has value 'maybe'", "true/false"), 1,
         rows=(text(), "", text(), text(distill="maybe")), args=LD),
    Case("distill-2.5", "sft", ("data.jsonl line 2: field 'distill' has value 2.5",), 1,
         rows=(text(), text(distill=2.5)), args=LD),
    Case("unknown-category-error", "sft",
         ("line 1: category = 'memes' is not a known category", "tagging.categories"), 1,
         config=C + "tagging:\n  unknown_category: error\n", rows=(text(category="memes"),), args=LD),
    Case("several-tag-errors-at-once", "sft", ("line 1: field 'distill'", "line 3: field 'distill'"), 1,
         rows=(text(distill="x"), text(), text(distill=-1)), args=LD),
    Case("malformed-json-line", "sft", ("data.jsonl line 2 is not valid JSON", "one JSON object per line"), 1,
         rows=(text(), '{"messages": [oops'), args=LD),
    Case("row-is-a-list", "sft", ("data.jsonl line 1 is a JSON list, not an object",), 1, rows=("[1, 2]",), args=LD),
    Case("missing-image", "sft",
         ("data.jsonl line 2: image '{missing}' does not exist", "another random row", "max_bad_rows: 1"), 1,
         rows=(text(), img("missing")), args=LD),
    Case("corrupt-image", "sft", ("corrupt.png is not a readable image (UnidentifiedImageError",), 1,
         rows=(img("corrupt"),), args=LD),
    Case("truncated-image", "sft", ("truncated.png is not a readable image",), 1, rows=(img("truncated"),), args=LD),
    Case("rows-over-max-length", "sft",
         ("line 2: ", "tokens, longer than --max_length 64: swift drops it without a word [a distilled row]",
          "Effect: 2 of 3 checked rows are distilled as written; 1 of the 2 that would train",
          "--truncation_strategy right", "--strict true"),
         1, rows=(text(), LONG_ROW, text(distill=False)), args=(*LD, "--max_length", "64")),
    Case("empty-dataset", "sft", ("holds no rows (0 bytes)", "empty dataset"), 1, rows=(), args=LD),
    Case("blank-lines-only", "sft", ("holds no rows",), 1, rows=("", "  "), args=LD),
    Case("dataset-file-missing", "sft", ("the file '/no/data.jsonl' does not exist",), 1, rows=None,
         args=(*LD, "--dataset", "/no/data.jsonl")),
    Case("bad-val-dataset", "sft", ("line 1: field 'distill' has value 'x'",), 1,
         args=(*LD, "--val_dataset", "{val}")),
    Case("tag-report-malformed-row", "tag-report", ("data.jsonl line 2: field 'distill' has value 'maybe'",), 2,
         rows=(text(), text(distill="maybe")), absent=("Traceback",)),
    Case("tag-report-long-rows", "tag-report",
         ("distilled (w > 0): 1 of 1 rows", "longer than --max_length 64", "max_bad_rows (0)"), 2,
         rows=(text(), LONG_ROW), args=("--model", "{student}", "--template", "qwen2_5_vl", "--max_length", "64")),
]
# fmt: on

# fmt: off
LATE_CASES = [  # what the plugin can only see as swift encodes the rows: counted, and fatal past the allowance
    Case("bad-row-beyond-the-scan", "sft",
         ("bad row 1 (preflight.max_bad_rows: 0)", "BadRowsError", "image '{missing}' does not exist",
          "max_bad_rows: N"),
         1, config=C + "preflight:\n  max_rows: 1\n", rows=(text(), img("missing")), student="real", args=LD,
         before_student=False),
    Case("bad-row-allowed", "sft", ("within preflight.max_bad_rows (1)", "'bad_rows': '1'"), 0,
         config=C + "preflight:\n  max_bad_rows: 1\n", rows=(text(), img("missing")), student="real", args=LD,
         before_student=False),
    Case("secret-never-written", "sft", ("teacher: ${LD_SECRET_TEACHER}", "model: ${LD_SECRET_TEACHER}"), 0,
         config=cfg("", "${LD_SECRET_TEACHER}"), env={"LD_SECRET_TEACHER": "{secret_teacher}"}, student="real",
         args=LD, before_student=False, absent=(SECRET,)),
]
# fmt: on

# fmt: off
RESUME_CASES = [
    Case("resume-changed-config", "sft",
         ("differs in: loss.lambda", "The run stops here", "unset LINGUDISTILL_CONFIG"), 1,
         config=cfg("loss:\n  lambda: 3.0\n", "${LD_RESUME_TEACHER}"), env={"LD_RESUME_TEACHER": "{teacher}"},
         args=(*LD, "--resume_from_checkpoint", "{resumable}/checkpoint-2")),
    Case("resume-variable-unset", "sft",
         ("Resuming from a checkpoint whose config is", "LD_RESUME_TEACHER is not set", "export them"), 1,
         config=None, args=(*LD, "--resume_from_checkpoint", "{resumable}/checkpoint-2")),
    Case("resume-own-folder-allowed", "sft", (STUDENT_LOADED,), 1, config=None,
         env={"LD_RESUME_TEACHER": "{teacher}"},
         args=(*LD, "--resume_from_checkpoint", "{resumable}/checkpoint-2", "--add_version", "false",
               "--output_dir", "{resumable}"),
         before_student=False),
]
# fmt: on

CASES = CONFIG_CASES + FLAG_CASES + TEACHER_CASES + DATA_CASES + LATE_CASES + RESUME_CASES


@pytest.fixture(scope="module")
def world(demo_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    built = build_world(root, demo_assets)
    secret = root / SECRET.strip("/").replace("/", "_")  # the teacher, reached through a path only the variable holds
    secret.symlink_to(built["teacher"])
    built["secret_teacher"] = secret
    built["val"] = root / "val.jsonl"
    built["val"].write_text(json.dumps(text(distill="x")) + "\n")
    import swift_lingudistill.integration.registration as registration

    registration.register()
    return built


def test_the_table_is_large_enough():
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)


# Cases that load the student (training through swift, or a resume reaching the load) cost 10-20 s each here.
PARAMS = [pytest.param(c, id=c.id, marks=[] if c.before_student else [pytest.mark.slow]) for c in CASES]


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input(case: Case, world, tmp_path, capfd, monkeypatch):
    protected = {name: fingerprint(world[name]) for name in ("finished", "teacher")}
    runs_before = {p.name for p in world["runs"].iterdir()}
    if case.id == "config-is-a-directory":
        case = Case(case.id, case.entry, case.expect, case.code, config=None)
        outcome = _validate_path(world["root"] / "configs", capfd)
    elif case.id == "config-missing":
        outcome = _validate_path(world["root"] / "nope.yaml", capfd)
    else:
        outcome = run_case(case, world, tmp_path, capfd, monkeypatch)
    text_out = outcome.output
    for fragment in case.expect:
        assert fill(fragment, world) in text_out, (
            f"{case.id}: missing {fill(fragment, world)!r} in:\n{text_out[-4000:]}"
        )
    assert outcome.code == case.code, f"{case.id}: exit {outcome.code}, expected {case.code}:\n{text_out[-3000:]}"
    if case.entry == "sft" and case.before_student:
        assert STUDENT_LOADED not in text_out and "model_info:" not in text_out, f"{case.id} reached the student"
    for name, before in protected.items():
        assert fingerprint(world[name]) == before, f"{case.id} changed the files of {name}"
    for folder in new_run_folders(world, runs_before):
        written = fingerprint(folder)
        if case.before_student:
            assert "lingudistill_config.yaml" not in written, f"{case.id}: a refused run wrote its config"
        for fragment in case.absent:
            assert not any(fragment in (folder / f).read_text(errors="replace") for f in written), case.id
    for fragment in case.absent:
        assert fragment not in text_out, f"{case.id}: {fragment!r} appears in the output"
    assert not world["marker"].exists(), f"{case.id}: the teacher's code ran"


def _validate_path(path, capfd):
    from swift_lingudistill.__main__ import main
    from tests.support.bad_inputs import Outcome

    capfd.readouterr()
    code = main(["validate", str(path)])
    captured = capfd.readouterr()
    return Outcome(code, captured.out + captured.err)


REAL = [c for c in CASES if c.id in ("teacher-remote-code", "add-version-false-over-a-run")]


@pytest.mark.slow
@pytest.mark.parametrize("case", REAL, ids=lambda c: c.id)
def test_real_swift_sft(case: Case, world, tmp_path):
    """The same refusal from the real `swift sft` command: exit status 1, nothing loaded, nothing written."""
    before = fingerprint(world["finished"])
    config, data = write_case_files(case, world, tmp_path)
    args = [fill(a, world) for a in case.args if a not in ("--loss_type", "lingudistill")]
    output_dir = world["runs"]
    if "--output_dir" in args:
        output_dir = args[args.index("--output_dir") + 1]
        args = [a for a in args if a not in ("--output_dir", str(output_dir))]
    run = run_sft(world["sentinel"], data, output_dir, "--loss_type", "lingudistill", *args, config=config,
                  env={"LINGUDISTILL_TEACHER": str(world["teacher"])}, steps=1)  # fmt: skip
    assert run.returncode == 1, run.output[-3000:]
    for fragment in case.expect:
        assert fill(fragment, world) in run.output, run.output[-3000:]
    assert STUDENT_LOADED not in run.output and "model_info:" not in run.output
    assert fingerprint(world["finished"]) == before and not world["marker"].exists()


@pytest.mark.slow
def test_tag_report_command_prints_the_message_without_a_traceback(world, tmp_path):
    case = next(c for c in CASES if c.id == "tag-report-malformed-row")
    config, data = write_case_files(case, world, tmp_path)
    env = {**os.environ, **OFFLINE, "LINGUDISTILL_TEACHER": "/unused"}
    cmd = [sys.executable, "-m", "swift_lingudistill", "tag-report", "--config", str(config), "--dataset", str(data)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "data.jsonl line 2: field 'distill' has value 'maybe'" in proc.stderr
