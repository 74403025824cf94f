"""``xtalhpc study``: the poster's five questions as recipes (jobs/study/), run arm by arm through the
project's own commands, resumable, and reported in docs/study.md (docs/study.md says how)."""
from .config import Arm, ArmConfig, StudyConfig, load_arm, load_study, load_study_config
from .driver import Driver
from .report import done_records, write_report

__all__ = ["Arm", "ArmConfig", "Driver", "StudyConfig", "done_records", "load_arm", "load_study",
           "load_study_config", "write_report"]
