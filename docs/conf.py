"""Sphinx configuration of the stgraph documentation.

Build (what CI runs, warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # import the checkout, installed or not

import stgraph  # noqa: E402

# -- Project ---------------------------------------------------------------------------------

project = "stgraph"
author = "stgraph contributors"
copyright = "stgraph contributors"  # noqa: A001
version = release = stgraph.__version__

# -- General ---------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# Unresolved cross-references (e.g. to torch / PyG types) are not errors.
nitpicky = False

# -- autodoc / napoleon ----------------------------------------------------------------------

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
    "no-value": True,  # constants are described by their doc comments, not their reprs
}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False  # nn.Module's own docstrings are not ours to render

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
# Our Google-style docstrings have a "Shapes:" section (PyG style, a bullet list): a generic
# section, rendered as a heading over its content as written.
napoleon_custom_sections = ["Shapes"]


# Constants re-exported by a package (``stgraph.graph.COCO17``, defined in
# ``stgraph.graph.skeleton``) carry their ``#:`` doc comment in the module that defines them,
# which autodoc does not read when it documents the package: automodule skips them as
# undocumented. The API pages list them with ``autodata``, and this hook fills in the comment.
def _defining_module_comment(fullname: str, obj: object) -> list[str] | None:
    from sphinx.pycode import ModuleAnalyzer

    pkg, _, attr = fullname.rpartition(".")
    for modname in sorted(m for m in sys.modules if m.startswith(pkg + ".")):
        if getattr(sys.modules[modname], attr, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # noqa: BLE001 - a module without source: no comment to find
            continue
        if ("", attr) in docs:
            return list(docs[("", attr)])
    return None


def _autodoc_process_docstring(app, what, name, obj, options, lines):
    # Without a comment in the package, autodoc gives such a constant its type's docstring
    # (``dict``'s, ``Skeleton``'s) or none: the defining module's comment replaces it.
    if what == "data":
        comment = _defining_module_comment(name, obj)
        if comment:
            lines[:] = comment


# A markdown page linking to a markdown file of the repository outside docs/ (results.md ->
# ../benchmarks/README.md) gets a reference to a document Sphinx does not have, an error
# under -W. Such links become downloads of the file (what MyST does for every other file),
# before Sphinx collects the downloads; links to missing files still warn.
def _outside_markdown_links_as_downloads(app, doctree):
    from sphinx import addnodes

    srcdir = Path(app.srcdir).resolve()
    docdir = (srcdir / app.env.docname).parent
    for node in list(doctree.findall(addnodes.pending_xref)):
        if node.get("reftype") != "myst" or node.get("refdomain") != "doc":
            continue
        target = node["reftarget"]
        if target in app.env.found_docs:
            continue
        for suffix in app.config.source_suffix:
            path = Path(target + suffix).resolve()
            if path.is_file() and srcdir not in path.parents:
                new = addnodes.download_reference(
                    refdomain=None, reftarget=os.path.relpath(path, docdir),
                    refdoc=node.get("refdoc"), reftype="myst",
                    refexplicit=node.get("refexplicit"), classes=["xref", "download", "myst"])
                new += node.children
                node.replace_self(new)
                break


def setup(app):
    app.connect("autodoc-process-docstring", _autodoc_process_docstring)
    app.connect("doctree-read", _outside_markdown_links_as_downloads, priority=400)


# -- MyST (markdown pages) -------------------------------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# -- HTML ------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"stgraph {release}"
