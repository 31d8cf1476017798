"""The asyncio agent process: glue between the core, the kernel and the control API."""
