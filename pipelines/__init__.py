"""The steps that chain the others: the acceptance run, the local pipeline runner, promote/rollback with its deploy."""
