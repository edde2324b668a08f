"""dotaudit's rule engine: Sigma rules compiled to Python predicates over flow records.

Public API::

    from dotaudit.rules.policy import Policy, load_policy, PolicyError
    from dotaudit.rules.loader import load_rules, RuleError
    from dotaudit.rules.correlate import correlate
    from dotaudit.rules.engine import evaluate
    from dotaudit.rules.cli import rules_group
"""
