// The Go bbolt oracle of the test suite, built from Debian's golang-github-coreos-bbolt-dev
// (bbolt v1.3.6, the version etcd 3.4 and 3.5 ship) by tests/support/bolt_oracle.py.
//
//	bolt_oracle check FILE   open read-only, run Tx.Check; print each problem, exit 1 if any
//	bolt_oracle dump FILE    print every bucket (nested too) and row as JSON, hex-encoded
//	bolt_oracle build FILE   create FILE from a JSON list of transactions read on stdin
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

type bucketDump struct {
	Rows    [][2]string            `json:"rows"`
	Buckets map[string]*bucketDump `json:"buckets"`
}

// One operation: ["bucket", path] creates buckets along path; ["put", path, key, value];
// ["del", path, key]. Path elements, keys and values are hex.
type op []json.RawMessage

type buildSpec struct {
	PageSize       int    `json:"page_size"`
	NoFreelistSync bool   `json:"no_freelist_sync"`
	Txs            [][]op `json:"txs"`
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: bolt_oracle check|dump|build FILE")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "check":
		err = check(os.Args[2])
	case "dump":
		err = dump(os.Args[2])
	case "build":
		err = build(os.Args[2])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
}

func check(path string) error {
	db, err := bolt.Open(path, 0400, &bolt.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	problems := 0
	err = db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			fmt.Println(e)
			problems++
		}
		return nil
	})
	if err == nil && problems > 0 {
		err = fmt.Errorf("%d problems", problems)
	}
	return err
}

func dumpBucket(b *bolt.Bucket) *bucketDump {
	d := &bucketDump{Rows: [][2]string{}, Buckets: map[string]*bucketDump{}}
	_ = b.ForEach(func(k, v []byte) error {
		if v == nil {
			d.Buckets[hex.EncodeToString(k)] = dumpBucket(b.Bucket(k))
		} else {
			d.Rows = append(d.Rows, [2]string{hex.EncodeToString(k), hex.EncodeToString(v)})
		}
		return nil
	})
	return d
}

func dump(path string) error {
	db, err := bolt.Open(path, 0400, &bolt.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	top := map[string]*bucketDump{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			top[hex.EncodeToString(name)] = dumpBucket(b)
			return nil
		})
	})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(top)
}

func unhex(raw json.RawMessage) []byte {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		panic(err)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func bucketAt(tx *bolt.Tx, raw json.RawMessage) (*bolt.Bucket, error) {
	var path []string
	if err := json.Unmarshal(raw, &path); err != nil {
		return nil, err
	}
	var b *bolt.Bucket
	for i, part := range path {
		name, _ := hex.DecodeString(part)
		var err error
		if i == 0 {
			b, err = tx.CreateBucketIfNotExists(name)
		} else {
			b, err = b.CreateBucketIfNotExists(name)
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

func build(path string) error {
	var spec buildSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		return err
	}
	db, err := bolt.Open(path, 0600, &bolt.Options{PageSize: spec.PageSize, NoFreelistSync: spec.NoFreelistSync})
	if err != nil {
		return err
	}
	defer db.Close()
	for _, ops := range spec.Txs {
		err = db.Update(func(tx *bolt.Tx) error {
			for _, o := range ops {
				var kind string
				_ = json.Unmarshal(o[0], &kind)
				b, err := bucketAt(tx, o[1])
				if err != nil {
					return err
				}
				switch kind {
				case "put":
					err = b.Put(unhex(o[2]), unhex(o[3]))
				case "del":
					err = b.Delete(unhex(o[2]))
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
