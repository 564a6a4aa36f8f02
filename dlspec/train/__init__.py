"""Training, evaluation and prediction runtimes. Framework-free pieces (metrics, run folders)
live here; `torch_loop` holds the PyTorch trainer."""
