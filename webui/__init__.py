"""The web UI: a Flask application (webui.app.create_app) with one blueprint per area, served by
`appliance webui serve` (webui.cli). It works on the same state database and policy code as the
`appliance` command, so a change made here is the same change the CLI would make."""
