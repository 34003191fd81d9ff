package hyperv

import (
	"fmt"
	"os"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func checkDir(dir string) error {
	st, err := os.Stat(dir)
	if os.IsNotExist(err) {
		return fmt.Errorf("folder %s: %w", dir, errdefs.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("folder %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a folder: %w", dir, errdefs.ErrInvalidArgument)
	}
	return nil
}
