"""Evaluation and reporting: WAR/UAR metrics, alignment diagnostics, tables and figures."""
