"""The store keys of each synthesis stage: the model and exactly the settings that shape its results.

A key changes when anything its stored results depend on changes (so other settings live beside
earlier ones) and stays when only how much is computed changes (more problems, a larger K, more
critiques reuse what is there). Later stages chain the keys of their inputs.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from genprm.evaluation.chat import ChatModel
from genprm.store import settings_key
from genprm.synthesis.consensus import FilterSettings
from genprm.synthesis.conversation import SPLIT_RULES, ExportSettings
from genprm.synthesis.critique import CritiqueSettings
from genprm.synthesis.labels import LabelSettings
from genprm.synthesis.rollouts import RolloutSettings
from genprm.synthesis.solutions import SolutionSettings


def _key(model: str, fields: dict[str, Any]) -> str:
    return settings_key(model, fields, ignore=())


def draw_key(policy: ChatModel, settings: SolutionSettings) -> str:
    return _key(policy.engine.model_id, {**settings.draw_fields(), **policy.template_fields()})


def selection_key(policy: ChatModel, settings: SolutionSettings) -> str:
    return _key(policy.engine.model_id, {**settings.selection_fields(), **policy.template_fields()})


def completer_key(completer: ChatModel, settings: RolloutSettings, system_prompt: str) -> str:
    return _key(completer.engine.model_id, {**settings.completer_fields(system_prompt), **completer.template_fields()})


def label_key(selection: str, completer: str, rollouts: RolloutSettings, labels: LabelSettings) -> str:
    return _key("labels", {"selection": selection, "completer": completer, **rollouts.k_fields(), **labels.to_dict()})


def teacher_key(teacher: ChatModel, settings: CritiqueSettings, seed: int) -> str:
    return _key(teacher.engine.model_id, {"stage": "critique", **asdict(settings), "seed": seed,
                                          **teacher.template_fields()})


def filter_key(labels: str, teacher: str, settings: FilterSettings) -> str:
    return _key("filter", {"labels": labels, "teacher": teacher, **settings.to_dict()})


def export_key(filter_: str, settings: ExportSettings) -> str:
    return _key("export", {"filter": filter_, "split_rules": SPLIT_RULES, **asdict(settings)})
