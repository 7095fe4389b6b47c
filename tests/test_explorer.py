from matplotlib.figure import Figure

from scidl.explorer import CheckpointExplorer
from scidl.train import train


def test_explorer_redraws_on_slider_and_renders_statically(tiny_config, store):
    run = train(tiny_config, store, progress=False)
    explorer = CheckpointExplorer(run, key_freqs=[1])
    assert isinstance(explorer.figure(20, neuron=3), Figure)
    drawn, figure = [], explorer.figure
    explorer.figure = lambda step, neuron: drawn.append((step, neuron)) or figure(step, neuron)
    box = explorer.widget()
    (slider, neuron), out = box.children[0].children, box.children[1]
    assert list(slider.options) == run.checkpoint_steps and slider.value == run.checkpoint_steps[-1]
    assert len(out.outputs) == 1 and "Figure" in out.outputs[0]["data"]["text/plain"]
    slider.value = 0
    neuron.value = 5
    assert drawn == [(60, 0), (0, 0), (0, 5)] and len(out.outputs) == 1
