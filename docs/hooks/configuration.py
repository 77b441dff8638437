"""mkdocs hook: the configuration reference page, generated from the conf/ beside mkdocs.yml on every build and never
committed, so that it cannot drift from the YAML."""

from pathlib import Path

from mkdocs.structure.files import File

from cellexp.commands.configs import markdown

PAGE = "reference/configuration.md"


def on_files(files, config):
    conf = Path(config.config_file_path).parent / "conf"
    files.append(File.generated(config, PAGE, content=markdown(conf)))
    return files
