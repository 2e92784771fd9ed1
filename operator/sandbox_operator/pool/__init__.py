"""SandboxTemplates and SandboxPools: warm pods a new Sandbox of a template claims."""
