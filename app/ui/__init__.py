"""The built-in page (`/ui`): plain HTML, CSS and JavaScript modules in `static/`, no build step.

The files ship inside the package (`[tool.setuptools.package-data]`), so an installed service
serves them without the source tree; `app.api.ui` serves them.
"""
