"""Pure domain logic: load, validate, select, render, plan. No I/O."""
