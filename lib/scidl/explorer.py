"""An ipywidgets explorer of a run's checkpoints: watch a circuit form during training, through the
checkpoint view of the run's phenomenon (grokking: the Fourier spectrum and one neuron)."""
from __future__ import annotations

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from scidl.errors import ScidlError, check_int, not_allowed
from scidl.registry import phenomenon_of
from scidl.store import Run


class CheckpointExplorer:
    """Checkpoint slider + neuron picker redrawing the phenomenon's checkpoint view.

    In a live kernel `explorer.widget()` is interactive; `explorer.figure(step, neuron)` renders
    the same views as a static Figure (what papermill/nbval keep). `view_options` go to the view
    (grokking: `key_freqs`).
    """

    def __init__(self, run: Run, **view_options) -> None:
        make_view = phenomenon_of(run.config).checkpoint_view
        if make_view is None:
            raise ScidlError(f"run {run.hash} is not allowed: the {run.config.task.kind} phenomenon has no "
                             f"checkpoint view")
        self.run, self.steps = run, run.checkpoint_steps
        self.view = make_view(run, **view_options)
        self._models: dict[int, torch.nn.Module] = {}

    def model(self, step: int):
        if step not in self.steps:
            raise ScidlError(not_allowed("step", step, f"run {self.run.hash} has checkpoints at {self.steps}"))
        if step not in self._models:
            self._models[step] = self.run.load_model(step)
        return self._models[step]

    def figure(self, step: int, neuron: int = 0) -> Figure:
        """Return the phenomenon's view of the checkpoint at `step`, showing neuron `neuron`."""
        model = self.model(step)
        check_int("neuron", neuron, 0, self.view.n_items - 1)
        return self.view.figure(model, step, neuron)

    def widget(self) -> widgets.Widget:
        """Return the interactive explorer (checkpoint slider, neuron picker, live figure)."""
        step = widgets.SelectionSlider(options=self.steps, value=self.steps[-1], description="step",
                                       continuous_update=False, layout=widgets.Layout(width="60%"))
        neuron = widgets.BoundedIntText(value=0, min=0, max=self.view.n_items - 1,
                                        description="neuron")
        out = widgets.Output()

        def redraw(_=None) -> None:
            # set the Output's state in the kernel: no display message, so headless runners
            # (papermill, nbval) keep the same cell outputs whether or not they manage widgets
            out.outputs = ()
            out.append_display_data(self.figure(step.value, neuron.value))
        step.observe(redraw, "value")
        neuron.observe(redraw, "value")
        redraw()
        return widgets.VBox([widgets.HBox([step, neuron]), out])
