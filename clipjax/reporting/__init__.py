"""Reporting, host side only: run summaries and the printed table (`summary`), comparison
tables (`tables`), sweep tables over seeds (`sweep_tables`), their plots (`sweep_plots`), a
sweep folder's report (`sweep_report`) and the studies' grid tables (`study_tables`).
"""
