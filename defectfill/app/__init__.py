"""`defectfill app`: make and curate defects by hand in a browser (Gradio).

The logic lives in small modules that do not import Gradio, so it is tested and reused without a
browser; `defectfill.app.ui` only wires it to the page:

    curation     the data set folder that accepted candidates go into (resumable, YOLO/COCO export)
    requests     the page's inputs -> a checked generation request (image, mask); candidates -> tiles
    generators   `load_app_generator`: a trained generator folder -> a `DefectGenerator`
    runs         a bench / real-data run folder -> its table, plots and contact sheets
    ui           the Gradio Blocks (needs the optional extra `defectfill[app]`)
"""
