"""The Gradio page of `defectfill app`: two tabs, wired to the Gradio-free logic of `defectfill.app`.

Tab "Make defects": pick or upload a good fabric image -> paint the mask (or propose one) -> pick
a generator, a defect type, k, seed, steps, guidance -> Generate -> k candidates with their
selection scores and changed-pixel outlines -> tick the ones to keep -> Save (accepted ones are
written to the data set folder, the rest logged as rejected) -> Export (YOLO + COCO).
Tab "Runs": open a bench or real-data run folder and see its table, plots and contact sheets.

Every handler turns a `DefectfillError` into the project's message in the page (`#message`) and
changes nothing else: nothing is written. Each event has an API name, so `gradio_client` drives
the same functions the page does (`/generate`, `/decide`, `/export`, `/open_dataset`, ...).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectfill.app.curation import CurationRequest, CurationSet, digest
from defectfill.app.generators import GeneratorBook, run_generator
from defectfill.app.requests import (
    candidate_choices,
    candidate_tiles,
    choice_index,
    editor_value,
    load_good_image,
    propose_mask,
    request_from_editor,
)
from defectfill.app.runs import read_run_folder, run_markdown
from defectfill.data.images import list_images
from defectfill.errors import DataError, DefectfillError

# Gradio reads this when it is imported: no usage statistics leave the machine
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SHARE_HINT = ("Served on this machine only. To let others on your network in, start it with `--host 0.0.0.0` "
              "(anyone who can reach the port can write to the data set folder).")


@dataclass
class AppSettings:
    """What `defectfill app` was started with."""

    book: GeneratorBook
    data_folder: Path
    images_folder: Path | None = None
    run_folder: Path | None = None
    real_masks: dict[str, list[np.ndarray]] = field(default_factory=dict)  # defect type -> real masks
    num_candidates: int = 4
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    brush_size: int | str = 4  # brush radius in image pixels ("auto": Gradio's, large on small images)


def _error(exc: Exception) -> str:
    return f"**Error:** {exc}"


class CurationApp:
    """The page's actions as plain methods (no Gradio types): what the handlers call."""

    def __init__(self, settings: AppSettings):
        self.settings = settings
        self._sets: dict[Path, CurationSet] = {}
        self._lock = threading.Lock()  # one writer per folder: page events may run concurrently
        self.dataset(settings.data_folder)

    def dataset(self, folder: str | Path) -> CurationSet:
        folder = Path(str(folder).strip() or self.settings.data_folder).expanduser().resolve()
        with self._lock:
            if folder not in self._sets:
                self._sets[folder] = CurationSet(folder)
            return self._sets[folder]

    def image_choices(self) -> list[str]:
        folder = self.settings.images_folder
        return [p.name for p in list_images(folder)] if folder else []

    def pick_image(self, name: str) -> tuple[np.ndarray, str]:
        folder = self.settings.images_folder
        if not folder or not name:
            raise DataError("no good image picked: choose one from the list (the folder given with --images)")
        return load_good_image(folder / name), name

    def generate(self, editor: dict | None, mask_file: str | None, model: str, defect_type: str, k: int, seed: int,
                 steps: int, guidance: float, source: dict | None) -> tuple[CurationRequest, Any, float]:
        """source: {"name", "digest"} of the last image loaded from a file; the request keeps its name
        when the editor still shows that image, else it is an "upload" (pasted or dropped in the editor)."""
        image, mask = request_from_editor(editor, mask_file)
        source_name = source["name"] if source and source.get("digest") == digest(image) else "upload"
        types = self.settings.book.defect_types(model)
        if defect_type not in types:
            raise DataError(f"defect type {defect_type!r}: not known to {model}; pick one of {types}")
        if int(k) < 1:
            raise DataError(f"k (candidates): must be >= 1, found {k}")
        generator = self.settings.book.get(model)
        spec = self.settings.book.spec(model)
        started = time.perf_counter()
        result, used = run_generator(generator, image, mask, defect_type=defect_type, num_candidates=int(k),
                                     seed=int(seed), num_inference_steps=int(steps), guidance_scale=float(guidance))
        seconds = time.perf_counter() - started
        request = CurationRequest(image=image, mask=mask, defect_type=defect_type, generator=spec.name,
                                  model=str(spec.path), seed=int(seed), source_name=source_name,
                                  settings=tuple(sorted(used.items())))
        return request, result, seconds

    def decide(self, folder: str, last: dict | None, accepted_labels: list[str]) -> str:
        if not last:
            raise DataError("no candidates to decide on: press Generate first")
        request, result = last["request"], last["result"]
        accept = [choice_index(label) for label in accepted_labels or []]
        reject = [i for i in range(len(result.candidates)) if i not in accept]
        dataset = self.dataset(folder)
        with self._lock:
            done = dataset.decide(request, result, accept, reject)
        said = [f"accepted {', '.join(f'#{i + 1}' for i in done['accepted']) or 'none'}",
                f"rejected {len(done['rejected'])}"]
        if done["skipped"]:
            said.append(f"{len(done['skipped'])} decided before (unchanged)")
        return "; ".join(said) + "."


def build_demo(app: CurationApp):
    """The gr.Blocks of the page."""
    import gradio as gr

    settings = app.settings
    book = settings.book
    first_model = book.labels[0] if book.labels else None
    first_types = book.defect_types(first_model) if first_model else []

    def summary(folder: str) -> str:
        dataset = app.dataset(folder)
        dataset.reload()  # another page or app may have added to the folder
        return dataset.summary()

    # ----------------------------------------------------------------------------- handlers
    def on_pick(name):
        try:
            image, source = app.pick_image(name)
        except DefectfillError as exc:
            return gr.skip(), gr.skip(), _error(exc)
        return editor_value(image), {"name": source, "digest": digest(image)}, f"Loaded {source} ({image.shape[1]}x{image.shape[0]})."

    def on_file(path):
        if not path:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            image = load_good_image(path)
        except DefectfillError as exc:
            return gr.skip(), gr.skip(), _error(exc)
        name = Path(path).name
        return editor_value(image), {"name": name, "digest": digest(image)}, f"Loaded {name} ({image.shape[1]}x{image.shape[0]})."

    def on_model(model):
        try:
            types = book.defect_types(model)
        except DefectfillError as exc:
            return gr.skip(), _error(exc)
        return gr.update(choices=types, value=types[0] if types else None), f"{model}: types {types}."

    def on_propose(editor, defect_type, seed, mode):
        try:
            if editor is None or editor.get("background") is None:
                raise DataError("no good image: upload or pick a fabric image before proposing a mask")
            image = np.asarray(editor["background"])[..., :3]
            mask = propose_mask(image, defect_type, int(seed), settings.real_masks.get(defect_type), mode)
        except DefectfillError as exc:
            return gr.skip(), _error(exc)
        return editor_value(image, mask), f"Proposed a {defect_type} mask ({mode}, seed {int(seed)}); edit it or generate."

    def on_generate(editor, mask_file, model, defect_type, k, seed, steps, guidance, source):
        try:
            request, result, seconds = app.generate(editor, mask_file, model, defect_type, k, seed, steps, guidance,
                                                    source)
        except DefectfillError as exc:
            return gr.skip(), gr.skip(), gr.skip(), _error(exc)
        best = result.selected[0] + 1
        message = (f"{len(result.candidates)} candidates in {seconds:.1f} s ({request.generator}, {defect_type}, "
                   f"seed {request.seed}); the selection ({result.selection_metric}) prefers #{best}. "
                   "Tick the ones to keep and press Save.")
        choices = candidate_choices(result)
        return (candidate_tiles(result), gr.update(choices=choices, value=[]),
                {"request": request, "result": result}, message)

    def on_decide(folder, last, accepted):
        try:
            said = app.decide(folder, last, accepted)
        except DefectfillError as exc:
            return _error(exc), gr.skip()
        return said, summary(folder)

    def on_export(folder):
        try:
            paths = app.dataset(folder).export()
        except DefectfillError as exc:
            return _error(exc)
        return f"Exported YOLO `{paths['yolo']}` and COCO `{paths['coco']}`."

    def on_open_dataset(folder):
        try:
            return summary(folder), "Data set opened: accepted images are added to it."
        except DefectfillError as exc:
            return gr.skip(), _error(exc)

    def on_open_run(folder):
        try:
            view = read_run_folder(folder)
        except DefectfillError as exc:
            return gr.skip(), gr.skip(), gr.skip(), _error(exc)
        return (run_markdown(view), [(str(p), c) for p, c in view.plots], [(str(p), c) for p, c in view.sheets],
                f"Opened {view.kind} `{view.folder}`: {len(view.plots)} plots, {len(view.sheets)} contact sheets.")

    # ------------------------------------------------------------------------------- layout
    with gr.Blocks(title="defectfill app", analytics_enabled=False) as demo:
        source = gr.State(None)  # {"name", "digest"} of the image last loaded from a file
        last = gr.State(None)
        gr.Markdown("## defectfill: make and curate defects")
        message = gr.Markdown("Upload or pick a good fabric image, paint where the defect goes, then Generate.",
                              elem_id="message")
        with gr.Tab("Make defects", id="make"):
            with gr.Row():
                with gr.Column(scale=3):
                    with gr.Row():
                        pick = gr.Dropdown(app.image_choices(), label="Good image (from --images)", value=None,
                                           visible=bool(settings.images_folder), elem_id="pick-image")
                        good_file = gr.File(label="or a good image file (PNG, JPEG, BMP, TIFF)", type="filepath",
                                            elem_id="good-file")
                    editor = gr.ImageEditor(
                        label="Fabric: paint the mask with the brush (zoom and pan for a long strip)",
                        type="numpy", image_mode="RGBA", format="png", layers=False, transforms=(),
                        sources=("upload", "clipboard"), elem_id="editor",
                        brush=gr.Brush(default_size=settings.brush_size, colors=["rgb(255, 40, 40)"], color_mode="fixed"),
                    )
                    with gr.Row():
                        mask_file = gr.File(label="Mask file (optional: replaces the painted mask)", type="filepath",
                                            elem_id="mask-file")
                        with gr.Column():
                            mode = gr.Radio(["auto", "procedural", "real"], value="auto", label="Proposed mask shape",
                                            info="procedural: per-type shapes; real: learned from --real-masks")
                            propose = gr.Button("Propose a mask", elem_id="propose")
                with gr.Column(scale=2):
                    model = gr.Dropdown(book.labels, value=first_model, label="Generator", elem_id="model")
                    defect_type = gr.Dropdown(first_types, value=first_types[0] if first_types else None,
                                              label="Defect type", elem_id="defect-type")
                    k = gr.Slider(1, 16, value=settings.num_candidates, step=1, label="k (candidates)", elem_id="k")
                    seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
                    steps = gr.Slider(1, 100, value=settings.num_inference_steps, step=1, label="Steps (DefectFill)",
                                      elem_id="steps")
                    guidance = gr.Slider(0, 15, value=settings.guidance_scale, step=0.5, label="Guidance (DefectFill)",
                                         elem_id="guidance")
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
            gallery = gr.Gallery(label="Candidates (yellow: mask asked for; red: pixels that changed = the label)",
                                 columns=4, format="png", object_fit="contain", height=360, elem_id="candidates")
            accept = gr.CheckboxGroup([], label="Accept (the others are rejected)", elem_id="accept")
            with gr.Row():
                save = gr.Button("Save decisions", variant="primary", elem_id="save")
                export = gr.Button("Export YOLO + COCO", elem_id="export")
            with gr.Row():
                folder = gr.Textbox(str(app.dataset(settings.data_folder).folder), label="Data set folder",
                                    elem_id="data-folder", scale=4)
                open_dataset = gr.Button("Open / resume", elem_id="open-dataset", scale=1)
            # a callable value is computed at each page load: a reload shows what the folder holds now
            dataset_md = gr.Markdown(lambda: summary(str(settings.data_folder)), elem_id="dataset")
        with gr.Tab("Runs", id="runs"):
            run_folder = gr.Textbox(str(settings.run_folder or ""), label="Bench or real-data run folder",
                                    elem_id="run-folder")
            open_run = gr.Button("Open run", elem_id="open-run")
            run_md = gr.Markdown(elem_id="run-table")
            run_plots = gr.Gallery(label="Plots", columns=2, format="png", elem_id="run-plots")
            run_sheets = gr.Gallery(label="Contact sheets", columns=2, format="png", elem_id="run-sheets")
        gr.Markdown(SHARE_HINT, elem_id="share-hint")

        # ------------------------------------------------------------------------------ events
        pick.change(on_pick, pick, [editor, source, message], api_name="pick_image")
        good_file.upload(on_file, good_file, [editor, source, message], api_name="load_image")
        model.change(on_model, model, [defect_type, message], api_name="model_types")
        propose.click(on_propose, [editor, defect_type, seed, mode], [editor, message], api_name="propose")
        generate.click(on_generate, [editor, mask_file, model, defect_type, k, seed, steps, guidance, source],
                       [gallery, accept, last, message], api_name="generate")
        save.click(on_decide, [folder, last, accept], [message, dataset_md], api_name="decide")
        export.click(on_export, folder, message, api_name="export")
        open_dataset.click(on_open_dataset, folder, [dataset_md, message], api_name="open_dataset")
        open_run.click(on_open_run, run_folder, [run_md, run_plots, run_sheets, message], api_name="open_run")
        if settings.run_folder:
            demo.load(on_open_run, run_folder, [run_md, run_plots, run_sheets, message], api_visibility="private")
    return demo


def launch(demo: Any, host: str = "127.0.0.1", port: int | None = None, *, block: bool = True, quiet: bool = False):
    """Serve the page (offline: no share link, no server-side rendering, analytics off, system fonts)."""
    import gradio as gr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # the default theme would fetch web fonts
    return demo.launch(server_name=host, server_port=port, share=False, ssr_mode=False, prevent_thread_lock=not block,
                       quiet=quiet, theme=theme, show_error=True)
