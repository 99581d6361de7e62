"""Evaluation reports: metrics and their intervals, eval reports and their comparison, the HTML page and its
charts."""
