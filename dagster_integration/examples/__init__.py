"""Example Dagster definitions (see ``dagster_integration.examples.wordcount``)."""
