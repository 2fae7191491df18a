"""Every setting of the image job is written once (SETTINGS); the flags, identity keys and reproduce derive from it."""

import shlex

from flowlite.jobs.cli import build_parser, main
from flowlite.jobs.image_settings import IDENTITY, SETTINGS, reproduce_command, resolve_config

PROMPTS = "data/prompts/simple_animals.txt"


def flags_of(args):
    return {k: v for k, v in vars(args).items() if k not in ("func", "command", "threads", "resume", "dry_run")}


def test_every_flag_setting_is_a_command_line_flag():
    sd3 = build_parser()._subparsers._group_actions[0].choices["sd3"]
    options = {o for a in sd3._actions for o in a.option_strings}
    assert {s.option for s in SETTINGS if s.flag} <= options
    assert set(IDENTITY) == {"tiny"} | {s.name for s in SETTINGS if s.identity}


def test_reproduce_command_resolves_to_the_same_config():
    parser = build_parser()
    config = resolve_config(flags_of(parser.parse_args(
        ["sd3", "--tiny", "--method", "vgg-flow", "--reward", "pickscore", "--prompts", PROMPTS, "--rank", "3",
         "--gradient-checkpointing"])))
    again = resolve_config(flags_of(parser.parse_args(shlex.split(reproduce_command(config))[3:])))
    assert again == config


def test_beta_for_a_method_without_a_kl_term_is_one_error_line(capsys):
    assert main(["sd3", "--tiny", "--method", "refl", "--beta", "1", "--reward", "aesthetic",
                 "--prompts", PROMPTS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--beta" in err[0] and "refl" in err[0]
