"""The event model: what each event type is (registry), its fields and how
its kernel records decode. The bottom of the data path's packages."""
