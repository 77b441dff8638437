"""mkdocs hook: the configuration reference page, generated from conf/ on every build and never committed, so that it
cannot drift from the YAML."""

from mkdocs.structure.files import File

from cellexp.commands.configs import markdown

PAGE = "reference/configuration.md"


def on_files(files, config):
    files.append(File.generated(config, PAGE, content=markdown()))
    return files
