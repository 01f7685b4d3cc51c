"""The chain survey's child process (:mod:`lifeboat.pitr.survey`): ``python -m lifeboat.pitr.survey_child``."""

from lifeboat.pitr.survey_run import main

main()
