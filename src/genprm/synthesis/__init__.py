"""Make GenPRM training data: the paper's synthesis pipeline (``genprm synth``, docs/synthesis.md).

Stages, each reading what the earlier ones stored in the run folder's store
(:mod:`genprm.synthesis.store`): step-forced policy *solutions* balanced half correct and half wrong
(:mod:`~genprm.synthesis.solutions`), Monte-Carlo *rollouts* with dynamic K
(:mod:`~genprm.synthesis.rollouts`), Relative Progress Estimation *labels*
(:mod:`~genprm.synthesis.labels`), the teacher's *critique* with executed code
(:mod:`~genprm.synthesis.critique`), the consensus *filter* (:mod:`~genprm.synthesis.consensus`)
and the *export* to per-step training conversations (:mod:`~genprm.synthesis.conversation`,
:mod:`~genprm.synthesis.export_files`). The drivers are in :mod:`~genprm.synthesis.stages` and
:mod:`~genprm.synthesis.teacher_stages`; :mod:`~genprm.synthesis.pipeline` runs them in order.
"""
