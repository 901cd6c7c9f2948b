"""Prometheus-style rules in the telemetry service: rule files (:mod:`.files`), the
templates of their labels and annotations (:mod:`.templates`), recording and alerting
rules evaluated in groups over the store (:mod:`.evaluator`), the manager that runs the
groups (:mod:`.manager`), the sender posting alerts to the notifier nodes
(:mod:`.sender`) and the JSON of ``/api/v1/rules`` and ``/api/v1/alerts`` (:mod:`.api`).

``default_rules.yml`` is the mesh's rule set, loaded when
``GEOPLEX_TELEMETRY_RULE_FILES`` is unset (or names ``default``).
"""

from .evaluator import Alert, AlertState, EvalOptions, Group, Health, OutgoingAlert
from .files import (DEFAULT_RULES, GroupSpec, LoadResult, RuleFileError, RuleProblem,
                    RuleSpec, check_rule_file, load_rules, parse_rule_file,
                    resolve_rule_files)
from .manager import RuleManager
from .templates import Template, TemplateData, TemplateError

__all__ = ["DEFAULT_RULES", "Alert", "AlertState", "EvalOptions", "Group", "GroupSpec",
           "Health", "LoadResult", "OutgoingAlert", "RuleFileError", "RuleManager",
           "RuleProblem", "RuleSpec", "Template", "TemplateData", "TemplateError",
           "check_rule_file", "load_rules", "parse_rule_file", "resolve_rule_files"]
