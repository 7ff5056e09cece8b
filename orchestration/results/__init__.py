"""Results: MLflow tracking, the leaderboard, plots and the HTML and console reports.

Reads what training wrote (runs, metrics, artifacts); never opens a checkpoint or starts Ray.
"""
