"""ARM request handlers, one module per resource provider area: each turns a request (``envelope.Ctx``) into a
call on the world's resources and the response ARM would send. The route table (``vmssctl.emulator.routes``)
says which handler serves which path."""
