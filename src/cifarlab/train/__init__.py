"""Training: the loop (``trainer``), its callbacks, optimizers, precision and checkpoints.

Import from the modules (``cifarlab.train.trainer``...): this package stays empty, so that
``import cifarlab`` can import it cheaply before defining ``cifarlab.train()``, which the
subpackage's name would otherwise replace when torch's modules load later.
"""
