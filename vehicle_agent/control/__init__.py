"""Act, fourth stage of the flow: the lens-cleaning fan and thermal protection.

Pure decisions: `cleaning` (when to blow the lens), `thermal` (cooler and fan from the module's
temperatures, with its sensor checks), `arbiter` (one duty: more air wins). Hardware: the `Fan`
interface (`fan`) and its drivers (`gpio_fan`, `sysfs_fan`, `mcu_fan`). The asyncio part:
`loop` (`ControlLoop`, refreshing the MCU's outputs only while the event loop is healthy);
`build` makes them from `settings` (the `[control]` config models).
"""
