package policies

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchSettle is how long a directory must be quiet after a change before it is reloaded:
// an editor or a deploy writes several files, and a set half written must not be judged.
const watchSettle = 100 * time.Millisecond

// Watch reloads the policy directory (Config.Dir) and the candidate's (Config.ShadowDir) whenever a file in it changes, once the
// directory has been quiet for a moment, and calls reloaded with the result of each Reload
// (nil: the new set is live; else it was refused and the old one decides). It returns when
// ctx ends, or at once with an error when the engine has no directory or it cannot be
// watched. Subdirectories created later are watched too.
func (e *Engine) Watch(ctx context.Context, reloaded func(error)) error {
	dirs := slices.DeleteFunc([]string{e.dir, e.shadow.dir}, func(d string) bool { return d == "" })
	if len(dirs) == 0 {
		return errors.New("policies: watch: no policy directory")
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("policies: watch: %w", err)
	}
	defer w.Close()
	for _, dir := range dirs {
		if err := watchTree(w, dir); err != nil {
			return fmt.Errorf("policies: watch %s: %w", dir, err)
		}
	}
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Create) {
				_ = watchTree(w, ev.Name) // a new subdirectory; a file gives an error, ignored
			}
			settle.Reset(watchSettle)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflow loses events: reload, so nothing is missed.
			e.logger.LogAttrs(ctx, slog.LevelWarn, "policies: watch: events lost; reloading", slog.Any("err", err))
			settle.Reset(watchSettle)
		case <-settle.C:
			reloaded(e.Reload(ctx))
		}
	}
}

// watchTree adds dir and its subdirectories, except those the loader skips.
func watchTree(w *fsnotify.Watcher, dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if p != dir && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		return w.Add(p)
	})
}
