"""Learning from moved cards: drops become edits, edits become fine-tune jobs, jobs become events.

``edits`` interprets a drop (relabel / reinforce / unsure), ``finetune`` is the training step and
re-layout that runs on the worker, ``history`` keeps every model version for undo, ``controller``
wires them to the workspace's event stream, and ``headless`` applies moves without a window (the
CLI, tests and benchmarks). Nothing here imports panda3d.
"""
