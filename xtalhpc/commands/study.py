"""``xtalhpc study``: run the study's arms (data -> train -> evaluate), skip finished ones, write the report."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "study", help="run a study: per arm generate -> train -> evaluate, resumable, with a report (docs/study.md)",
        description="Read STUDY/study.toml and every other STUDY/*.toml (one arm each: dataset, training, "
                    "evaluation), check them all, then run each arm not yet done through xtalhpc generate/"
                    "synthesize/split/dedup, train and evaluate (an arm is done when its metrics.json files exist "
                    "and its done.json holds its recipe's digest; a changed recipe reruns it), compare each "
                    "question's arms (evaluate --compare) and write OUTPUT/study.md (and --report). docs/study.md.")
    p.add_argument("study", metavar="STUDY", help="folder of recipes (jobs/study)")
    p.add_argument("-o", "--output", required=True, metavar="STUDYDIR", help="study folder (created; reused to resume)")
    p.add_argument("--cluster", default="local", choices=("local", "slurm", "debug"),
                   help="where train and evaluate run (their --cluster; default local)")
    p.add_argument("--partition", default=None, metavar="P", help="Slurm partition for train and evaluate")
    p.add_argument("--time", default=None, metavar="T", help="Slurm time limit for train and evaluate")
    p.add_argument("--arms", nargs="+", default=None, metavar="ARM", help="run only these arms (file stems)")
    p.add_argument("--report", default=None, metavar="MD", help="also write the report here (e.g. docs/study.md; "
                   "plots beside it in <MD stem>/)")
    p.add_argument("--report-only", action="store_true", help="write the report from what is finished; run nothing")
    return p


def run(args) -> int:
    import shlex
    import sys
    from pathlib import Path

    from ..job import EXIT_OK, Log
    from ..study import Driver, load_study, write_report

    log = Log("study")
    _stop_on_signals()
    study, arms = load_study(args.study, args.arms)  # every recipe checked before anything runs
    _, all_arms = load_study(args.study)
    drv = Driver(study, arms, args.output, cluster=args.cluster, partition=args.partition, time_limit=args.time,
                 study_folder=args.study, log=log)
    status = EXIT_OK
    if not args.report_only:
        log(f"{len(arms)} arm(s) in {args.study}; output {drv.out}")
        status = drv.run(all_arms)
        if status == 130:
            return status
        drv.compare()
    else:
        drv.write_study_json(all_arms)
    command = "xtalhpc study " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["study"] \
        else f"xtalhpc study {args.study} --output {args.output}"
    md = write_report(drv.out, drv.out / "study.md", command=command)
    log(f"report {md}")
    if args.report:
        rp = Path(args.report)
        write_report(drv.out, rp, image_dir=rp.parent / rp.stem, command=command)
        log(f"report {rp}")
    return status


def _stop_on_signals() -> None:
    """SIGTERM (Slurm's time limit, ``kill``) and SIGINT (also when started in the background, where the
    shell ignores it) stop the driver like Ctrl-C: the running command is stopped, the arm is recorded as
    interrupted, exit status 130, and the same command resumes."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
