"""Scaling and hyper-parameter sweeps: one command trains a ladder of runs and plots the curves.

  plan      a sweep config -> the runs (sizes x product axes x zipped axes) and their configs
  runner    each run as an ordinary training run in its own directory, resumable, evaluated at
            fixed token counts; local or printed (cluster) dispatch; results collection
  power_law loss = a * C^-b (+ c) fitted in log space
  report    the table and the plots, regenerated from the sweep's results JSON alone

`experiments/sweep.py --config=experiments/configs/sweep.py:LADDER --workdir=DIR` drives them.
"""
