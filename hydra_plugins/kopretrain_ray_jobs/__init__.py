"""kopretrain's Hydra launcher plugin `hydra/launcher=ray_jobs` (each sweep point a Ray job).

Hydra instantiates launchers only from modules under the top-level `hydra_plugins` namespace
package and imports every one of them when it scans for plugins, so this package stays light:
the work is in `kopretrain.launch.ray_jobs`, imported when a sweep is launched.
"""
