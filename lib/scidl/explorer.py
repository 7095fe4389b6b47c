"""An ipywidgets explorer of a run's checkpoints: watch the Fourier circuit form during training."""
from __future__ import annotations

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from scidl import circuits, fourier, plots
from scidl.errors import ScidlError, check_int, not_allowed
from scidl.store import Run


class CheckpointExplorer:
    """Checkpoint slider + neuron picker redrawing the embedding spectrum and one neuron's views.

    In a live kernel `explorer.widget()` is interactive; `explorer.figure(step, neuron)` renders
    the same views as a static Figure (what papermill/nbval keep).
    """

    def __init__(self, run: Run, key_freqs: list[int] | None = None) -> None:
        self.run, self.steps = run, run.checkpoint_steps
        self.key_freqs = (fourier.check_freqs("key_freqs", key_freqs, run.config.task.p) if key_freqs is not None
                          else circuits.key_freqs(run.load_model()))
        self._models: dict[int, torch.nn.Module] = {}

    def model(self, step: int):
        if step not in self.steps:
            raise ScidlError(not_allowed("step", step, f"run {self.run.hash} has checkpoints at {self.steps}"))
        if step not in self._models:
            self._models[step] = self.run.load_model(step)
        return self._models[step]

    def figure(self, step: int, neuron: int = 0) -> Figure:
        """Return the spectrum and neuron `neuron`'s activation grid and 2-D spectrum at `step`."""
        model = self.model(step)
        check_int("neuron", neuron, 0, self.run.config.model.d_mlp - 1)
        acts = circuits.neuron_acts(model)[:, :, neuron]
        spectrum = fourier.freq_grid_norms(fourier.fourier_transform_2d(acts))
        spectrum[0, 0] = 0  # the mean
        share = circuits.embedding_energy(model)
        return plots.plot_checkpoint_view(share, self.key_freqs, acts, spectrum, step, neuron)

    def widget(self) -> widgets.Widget:
        """Return the interactive explorer (checkpoint slider, neuron picker, live figure)."""
        step = widgets.SelectionSlider(options=self.steps, value=self.steps[-1], description="step",
                                       continuous_update=False, layout=widgets.Layout(width="60%"))
        neuron = widgets.BoundedIntText(value=0, min=0, max=self.run.config.model.d_mlp - 1,
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
